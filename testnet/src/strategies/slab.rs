//! A slab: values in flight (messages, transfers) keyed by a reusable `u64` tag.

/// Values by tag; freed tags are reused, so the slab stays as large as the most in flight at once.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    /// Stores a value; returns its tag.
    pub(crate) fn insert(&mut self, value: T) -> u64 {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(value);
                i as u64
            }
            None => {
                self.slots.push(Some(value));
                (self.slots.len() - 1) as u64
            }
        }
    }

    /// Asks for the cache line of `tag`'s slot (see [`crate::prefetch`]); nothing in it is read.
    pub(crate) fn prefetch(&self, tag: u64) {
        if let Some(slot) = self.slots.get(tag as usize) {
            crate::prefetch::prefetch(slot, 1);
        }
    }

    /// Takes the value of `tag` out (once).
    pub(crate) fn take(&mut self, tag: u64) -> Option<T> {
        let value = self.slots.get_mut(tag as usize)?.take();
        if value.is_some() {
            self.free.push(tag as usize);
        }
        value
    }
}
