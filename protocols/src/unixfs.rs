//! The root CID IPFS gives a file imported with CID version 1, raw leaves, fixed-size chunks and the balanced layout
//! (`ipfs add --cid-version=1 --raw-leaves --chunker=size-65536`, or `ipfs-unixfs-importer` with those options).
//!
//! The balanced layout groups the leaves into parents of at most 174 links, then groups those parents the same way,
//! until one node is left. A file of a single block is that block. Each parent is a DAG-PB node (spec:
//! <https://ipld.io/specs/codecs/dag-pb/spec/>) whose `Data` is a UnixFS `File` with its `filesize` and the
//! `blocksizes` of its children; links carry an empty name and the cumulative size (`Tsize`) of their subtree.
//! DAG-PB requires links to be written before data, which is why the outer node is encoded by hand here rather
//! than by prost (which writes fields in tag order).

use cid::Cid;
use multihash_codetable::{Code, MultihashDigest};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// Multicodec of DAG-PB nodes.
const DAG_PB: u64 = 0x70;
/// UnixFS `Data.DataType.File`.
const UNIXFS_FILE: u64 = 2;
/// Most links per parent in IPFS's balanced layout.
pub(crate) const MAX_LINKS: usize = 174;

/// One node of the DAG as its parent sees it.
#[derive(Clone, Copy)]
struct Child {
    cid: Cid,
    /// Bytes of file content below this node.
    file_size: u64,
    /// Encoded size of this node and everything below it (the link's `Tsize`).
    tree_size: u64,
}

/// The root CID of a file whose raw leaves, in order, have these CIDs and sizes.
///
/// `leaves` must not be empty.
pub(crate) fn balanced_root(leaves: &[(Cid, u64)]) -> Cid {
    assert!(!leaves.is_empty(), "a file has at least one leaf");
    if let [(cid, _)] = leaves {
        return *cid;
    }
    let mut level: Vec<Child> = leaves
        .iter()
        .map(|&(cid, size)| Child {
            cid,
            file_size: size,
            tree_size: size,
        })
        .collect();
    loop {
        level = level.chunks(MAX_LINKS).map(parent_of).collect();
        if let [root] = level.as_slice() {
            return root.cid;
        }
    }
}

fn parent_of(children: &[Child]) -> Child {
    let file_size: u64 = children.iter().map(|c| c.file_size).sum();
    let data = unixfs_file_data(file_size, children);
    let mut node = Vec::with_capacity(children.len() * 48 + data.len() + 8);
    for child in children {
        let link = pb_link(child);
        encode_key(2, WireType::LengthDelimited, &mut node);
        encode_varint(link.len() as u64, &mut node);
        node.extend_from_slice(&link);
    }
    encode_key(1, WireType::LengthDelimited, &mut node);
    encode_varint(data.len() as u64, &mut node);
    node.extend_from_slice(&data);

    let tree_size = node.len() as u64 + children.iter().map(|c| c.tree_size).sum::<u64>();
    Child {
        cid: Cid::new_v1(DAG_PB, Code::Sha2_256.digest(&node)),
        file_size,
        tree_size,
    }
}

/// `PBLink { Hash = 1, Name = 2 (empty), Tsize = 3 }`.
fn pb_link(child: &Child) -> Vec<u8> {
    let hash = child.cid.to_bytes();
    let mut link = Vec::with_capacity(hash.len() + 16);
    encode_key(1, WireType::LengthDelimited, &mut link);
    encode_varint(hash.len() as u64, &mut link);
    link.extend_from_slice(&hash);
    encode_key(2, WireType::LengthDelimited, &mut link);
    encode_varint(0, &mut link);
    encode_key(3, WireType::Varint, &mut link);
    encode_varint(child.tree_size, &mut link);
    link
}

/// UnixFS `Data { Type = File, filesize, blocksizes }` (proto2: `blocksizes` is not packed).
fn unixfs_file_data(file_size: u64, children: &[Child]) -> Vec<u8> {
    let mut data = Vec::with_capacity(4 + encoded_len_varint(file_size) + children.len() * 5);
    encode_key(1, WireType::Varint, &mut data);
    encode_varint(UNIXFS_FILE, &mut data);
    encode_key(3, WireType::Varint, &mut data);
    encode_varint(file_size, &mut data);
    for child in children {
        encode_key(4, WireType::Varint, &mut data);
        encode_varint(child.file_size, &mut data);
    }
    data
}
