// Which host uid and gid jailed device processes run as. In its jail a
// device is nobody inside a user namespace, but the namespace maps that to
// whoever started it: a core running as root would give every device host
// uid 0 (root's files are then its own to read and write, through any path
// it can reach). So a core started as root runs each device as an
// unprivileged host uid and gid (--uid/--gid, default 65534:65534, nobody;
// a distinct pair per VM keeps tenants apart), set before bwrap is run. A
// core that is not root runs devices as itself and can choose nothing else.
// The fds the core opened (image, tap, share, guest memory) work whatever
// the uid; files reached through a 9p share are accessed as that uid.
import fs from 'node:fs';
import path from 'node:path';

export const NOBODY = 65534;

export interface HostIds {
  uid: number;
  gid: number;
}

/** A --uid/--gid mistake, in one sentence. */
export class IdentityError extends Error {}

function id(flag: string, value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 0xfffffffe) throw new IdentityError(`${flag} needs a numeric host id, not "${value}"`);
  return Number(value);
}

/** The ids devices run as, from --uid/--gid; undefined: as the caller (not root). */
export function deviceIdentity(uid: string | undefined, gid: string | undefined, self = { uid: process.getuid!(), gid: process.getgid!() }): HostIds | undefined {
  const wanted = { uid: uid === undefined ? undefined : id('--uid', uid), gid: gid === undefined ? undefined : id('--gid', gid) };
  if (self.uid !== 0) {
    if ((wanted.uid !== undefined && wanted.uid !== self.uid) || (wanted.gid !== undefined && wanted.gid !== self.gid)) {
      throw new IdentityError('--uid and --gid need splitvm to run as root (otherwise devices run as you)');
    }
    return undefined;
  }
  return { uid: wanted.uid ?? NOBODY, gid: wanted.gid ?? NOBODY };
}

/** Whether `ids` may search (x) or read (r) a file with this stat, by its owner, group or other bits. */
function may(st: fs.Stats, ids: HostIds, bit: 1 | 4): boolean {
  if (ids.uid === 0) return true;
  const shift = st.uid === ids.uid ? 6 : st.gid === ids.gid ? 3 : 0;
  return ((st.mode >> shift) & bit) !== 0;
}

/**
 * Throws IdentityError unless `ids` can reach and read each path (the code
 * the jail binds in): every folder above it searchable, the path itself readable.
 */
export function checkReadable(ids: HostIds, paths: string[]): void {
  for (const p of paths) {
    const full = path.resolve(p);
    let at = path.parse(full).root;
    for (const part of full.slice(at.length).split(path.sep).filter(Boolean)) {
      if (!may(fs.statSync(at), ids, 1)) throw new IdentityError(`device processes run as uid ${ids.uid}, which cannot enter ${at}: make the checkout reachable by that user, or pick another --uid`);
      at = path.join(at, part);
    }
    if (!may(fs.statSync(full), ids, 4)) throw new IdentityError(`device processes run as uid ${ids.uid}, which cannot read ${full}: make the checkout readable by that user, or pick another --uid`);
  }
}
