// Namespaces and mounts through koffi, for the core's own mount namespace
// (src/core/jail/core-namespace.ts): unshare, mount, umount2 and
// pivot_root (which glibc does not wrap). Each throws a SysError on failure.
import { check, libcLibrary } from './libc.js';

export const CLONE_NEWNS = 0x00020000;
export const CLONE_NEWIPC = 0x08000000;
export const MS_RDONLY = 0x1;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;
export const MS_REMOUNT = 0x20;
export const MS_REC = 0x4000;
export const MS_SLAVE = 0x80000;
export const MNT_DETACH = 0x2;
const SYS_PIVOT_ROOT = 155;

const unshare_ = libcLibrary.func('int unshare(int flags)');
const mount_ = libcLibrary.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)');
const umount2_ = libcLibrary.func('int umount2(const char *target, int flags)');
const pivotRoot_ = libcLibrary.func('syscall', 'long', ['long', 'str', 'str']);

export const unshare = (flags: number): void => void check('unshare', unshare_(flags));
export const mount = (source: string | null, target: string, fstype: string | null, flags: number, data: string | null = null): void =>
  void check(`mount ${target}`, mount_(source, target, fstype, flags, data));
export const umount2 = (target: string, flags: number): void => void check(`umount ${target}`, umount2_(target, flags));
export const pivotRoot = (newRoot: string, putOld: string): void => void check('pivot_root', Number(pivotRoot_(SYS_PIVOT_ROOT, newRoot, putOld)));
