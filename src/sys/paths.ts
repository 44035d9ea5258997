// Finding things on the host: the repository this code runs from (from src/
// under tsx, from dist/ when built, or /splitvm inside a device's jail) and
// an executable on PATH. Shared by the core, device processes and scripts.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest ancestor of this module with policies/ and package.json. */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'policies', 'common.policy')) && fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no repository root (policies/common.policy) above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** The path of executable `tool` on PATH, or null. */
export function which(tool: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = path.join(dir || '.', tool);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}
