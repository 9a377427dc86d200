//! Following the live HLS playlist ffmpeg writes: which segments are new since the last look.
//!
//! ffmpeg writes a segment's file before it lists it, so a listed segment is complete. Its sequence number is the
//! playlist's `#EXT-X-MEDIA-SEQUENCE` plus its position in the list.

use std::path::{Path, PathBuf};

/// The media segments a playlist lists, with their sequence numbers.
pub fn parse(text: &str) -> Vec<(u64, String)> {
    let mut first = 0;
    let mut segments = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            first = value.trim().parse().unwrap_or(0);
        } else if !line.is_empty() && !line.starts_with('#') {
            segments.push(line.to_owned());
        }
    }
    segments
        .into_iter()
        .enumerate()
        .map(|(i, uri)| (first + i as u64, uri))
        .collect()
}

/// A playlist on disk, read again on every [`poll`](Self::poll).
#[derive(Debug)]
pub struct PlaylistFollower {
    path: PathBuf,
    next: u64,
}

impl PlaylistFollower {
    /// Follows the playlist at `path`, from its first segment.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            next: 0,
        }
    }

    /// The segments listed since the last call, oldest first, each with its file's path. A playlist that does not
    /// exist yet (ffmpeg has not written it) lists nothing.
    pub async fn poll(&mut self) -> Vec<(u64, PathBuf)> {
        let Ok(text) = tokio::fs::read_to_string(&self.path).await else {
            return Vec::new();
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let new: Vec<(u64, PathBuf)> = parse(&text)
            .into_iter()
            .filter(|(seq, _)| *seq >= self.next)
            .map(|(seq, uri)| (seq, dir.join(uri)))
            .collect();
        if let Some((last, _)) = new.last() {
            self.next = last + 1;
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_follow_the_media_sequence() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:4\n#EXTINF:2.0,\nindex4.ts\n#EXTINF:2.0,\nindex5.ts\n";
        assert_eq!(
            parse(text),
            vec![(4, "index4.ts".to_owned()), (5, "index5.ts".to_owned())]
        );
    }
}
