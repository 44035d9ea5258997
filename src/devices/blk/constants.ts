// virtio-blk numbers (virtio 1.2 §5.2): feature bits, request types, status
// values and the layout of the configuration space.
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

export { VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX } from '../virtio/queue.js';
export const VIRTIO_F_VERSION_1 = 32;

export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
export const VIRTIO_BLK_ID_BYTES = 20;
export const SECTOR_SIZE = 512;
/** The request header: type u32, reserved u32, sector u64. */
export const REQUEST_HEADER_BYTES = 16;
/** One discard / write-zeroes segment: sector u64, num_sectors u32, flags u32. */
export const DWZ_SEGMENT_BYTES = 16;

/** Offsets in struct virtio_blk_config. */
export const CONFIG = {
  capacity: 0, // u64, in 512-byte sectors
  sizeMax: 8, // u32
  segMax: 12, // u32
  geometry: 16, // u16 cylinders, u8 heads, u8 sectors
  blkSize: 20, // u32
  topology: 24, // u8 physical_block_exp, u8 alignment_offset, u16 min_io_size, u32 opt_io_size
  writeback: 32, // u8
  numQueues: 34, // u16
  maxDiscardSectors: 36,
  maxDiscardSeg: 40,
  discardSectorAlignment: 44,
  maxWriteZeroesSectors: 48,
  maxWriteZeroesSeg: 52,
  writeZeroesMayUnmap: 56, // u8
  size: 60, // up to and including unused1[3]
} as const;
