// Prints the root CID IPFS computes for each file named on the command line, with CID version 1, raw leaves,
// 64 KiB fixed-size chunks and the balanced layout: the independent reference for StreamrP2P's segment CIDs.
import { readFile } from 'node:fs/promises'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

// Nothing is kept: only the CIDs are wanted.
const blockstore = {
  put: async (cid) => cid,
  get: async () => { throw new Error('not stored') },
  has: async () => false
}

for (const path of process.argv.slice(2)) {
  const content = await readFile(path)
  const options = {
    cidVersion: 1,
    rawLeaves: true,
    reduceSingleLeafToSelf: true,
    chunker: fixedSize({ chunkSize: 65536 }),
    layout: balanced({ maxChildrenPerNode: 174 })
  }
  for await (const entry of importer([{ content }], blockstore, options)) {
    console.log(`${entry.cid.toString()} ${path}`)
  }
}
