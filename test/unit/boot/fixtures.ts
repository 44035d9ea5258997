// Synthetic kernel images for the boot tests: a minimal ELF64 vmlinux with
// chosen PT_LOAD segments, and a minimal bzImage with a setup header.

export interface ElfSegmentSpec {
  paddr: number;
  vaddr?: bigint;
  data: Uint8Array;
  memsz?: number;
  type?: number;
}

export interface ElfSpec {
  entry: bigint;
  segments: ElfSegmentSpec[];
  elfClass?: number;
  machine?: number;
  type?: number;
}

/** Builds an ELF64 little-endian executable: header, program headers, then segment data. */
export function makeElf(spec: ElfSpec): Uint8Array {
  const phoff = 64;
  const dataStart = phoff + spec.segments.length * 56;
  const total = dataStart + spec.segments.reduce((n, s) => n + s.data.length, 0);
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, spec.elfClass ?? 2, 1, 1]);
  v.setUint16(16, spec.type ?? 2, true);
  v.setUint16(18, spec.machine ?? 62, true);
  v.setUint32(20, 1, true);
  v.setBigUint64(24, spec.entry, true);
  v.setBigUint64(32, BigInt(phoff), true);
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, spec.segments.length, true);
  let off = dataStart;
  spec.segments.forEach((s, i) => {
    const ph = phoff + i * 56;
    v.setUint32(ph, s.type ?? 1, true);
    v.setUint32(ph + 4, 7, true);
    v.setBigUint64(ph + 8, BigInt(off), true);
    v.setBigUint64(ph + 16, s.vaddr ?? BigInt(s.paddr), true);
    v.setBigUint64(ph + 24, BigInt(s.paddr), true);
    v.setBigUint64(ph + 32, BigInt(s.data.length), true);
    v.setBigUint64(ph + 40, BigInt(s.memsz ?? s.data.length), true);
    v.setBigUint64(ph + 48, 0x200000n, true);
    out.set(s.data, off);
    off += s.data.length;
  });
  return out;
}

export interface BzImageSpec {
  setupSects?: number;
  version?: number;
  xloadflags?: number;
  payload: Uint8Array;
  initSize?: number;
  initrdAddrMax?: number;
  kernelAlignment?: number;
}

/** Builds a bzImage: boot sector + setup sectors with the header, then the protected-mode payload. */
export function makeBzImage(spec: BzImageSpec): Uint8Array {
  const sects = spec.setupSects ?? 4;
  const setupLen = ((sects || 4) + 1) * 512;
  const out = new Uint8Array(setupLen + spec.payload.length);
  const v = new DataView(out.buffer);
  out[0x1f1] = sects;
  v.setUint16(0x1fe, 0xaa55, true);
  out[0x200] = 0xeb; // jmp short
  out[0x201] = 0x26c - 0x202; // header ends at 0x26c
  v.setUint32(0x202, 0x53726448, true);
  v.setUint16(0x206, spec.version ?? 0x020f, true);
  out[0x211] = 0x01; // LOADED_HIGH
  v.setUint32(0x214, 0x100000, true);
  v.setUint32(0x22c, spec.initrdAddrMax ?? 0x7fffffff, true);
  v.setUint32(0x230, spec.kernelAlignment ?? 0x200000, true);
  out[0x234] = 1;
  v.setUint16(0x236, spec.xloadflags ?? 0x3, true);
  v.setUint32(0x238, 2047, true);
  v.setUint32(0x260, spec.initSize ?? 0, true);
  out.set(spec.payload, setupLen);
  return out;
}

/** `n` bytes of a recognizable pattern. */
export function pattern(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

export const sum8 = (bytes: Uint8Array): number => bytes.reduce((a, b) => (a + b) & 0xff, 0);
