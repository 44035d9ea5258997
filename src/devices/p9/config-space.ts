// virtio-9p's identity and configuration space (virtio 1.2 §5.11): device
// id 9, one request queue, and the mount tag the guest mounts by, as
// tag_len[u16 LE] then the tag's bytes (no NUL). The spec sets no length
// limit; ours keeps the whole config inside the 256 bytes the transport
// gives a device, with room to spare.
export const VIRTIO_ID_9P = 9;
/** PCI class of virtio-9p as QEMU presents it: 0x00 (unclassified) / 0x02. */
export const VIRTIO_9P_PCI_CLASS = 0x000200;
/** Feature bit: the config space holds a mount tag. */
export const VIRTIO_9P_MOUNT_TAG = 0;
export const MAX_TAG_BYTES = 64;
const TAG = /^[A-Za-z0-9_.-]+$/;

/** Why `tag` cannot be a mount tag, or null when it can. */
export function tagProblem(tag: string): string | null {
  if (!TAG.test(tag)) return 'a mount tag is made of letters, digits, "_", "." and "-"';
  if (tag.length > MAX_TAG_BYTES) return `a mount tag is at most ${MAX_TAG_BYTES} characters`;
  return null;
}

export function encodeConfig(tag: string): Uint8Array {
  const bytes = Buffer.from(tag, 'utf8');
  const cfg = new Uint8Array(2 + bytes.length);
  new DataView(cfg.buffer).setUint16(0, bytes.length, true);
  cfg.set(bytes, 2);
  return cfg;
}
