// virtio-9p as a device kind: its options ({ tag, readOnly }) and its backend
// on the share's root directory fd, which the core opened, with its fid
// journal in the state the core keeps for it (journal.ts).
import type { DeviceKindModule } from '../backend.js';
import { P9Backend, type P9Options } from './backend.js';
import { tagProblem } from './config-space.js';
import { FidJournal } from './journal.js';

export function parseP9Options(raw: unknown): P9Options {
  if (typeof raw !== 'object' || raw === null) throw new Error('p9 must be an object');
  const { tag, readOnly, ...rest } = raw as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw new Error(`unknown field p9.${Object.keys(rest)[0]}`);
  if (typeof readOnly !== 'boolean') throw new Error('p9.readOnly must be a boolean');
  if (typeof tag !== 'string') throw new Error('p9.tag must be a string');
  const problem = tagProblem(tag);
  if (problem) throw new Error(`p9.tag: ${problem}`);
  return { tag, readOnly };
}

export const p9Kind: DeviceKindModule<P9Options> = {
  kind: 'p9',
  parseOptions: parseP9Options,
  createBackend: ({ fd, options, log, state }) => new P9Backend(fd, options, log, state ? new FidJournal(state) : undefined),
};
