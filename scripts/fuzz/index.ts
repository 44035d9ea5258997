// scripts/fuzz/index.ts — owns the runner behind `npm run fuzz`: runs the
// fuzz targets named first on the command line (blk, net, p9, p9-journal), or all of them in
// turn, each as its own process (scripts/fuzz/NAME.ts) with the remaining
// arguments (--seconds N, --seed S). Exits non-zero when any target reports
// a finding.
//   npm run fuzz                       every target, 20 s each, random seeds
//   npm run fuzz -- net --seed 7       one target
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const TARGETS = ['blk', 'net', 'p9', 'p9-journal'];

const args = process.argv.slice(2);
const named = args.filter((a) => TARGETS.includes(a));
const rest = args.filter((a) => !TARGETS.includes(a));
let status = 0;
for (const target of named.length ? named : TARGETS) {
  const script = fileURLToPath(new URL(`./${target}.ts`, import.meta.url));
  const r = spawnSync(process.execPath, ['--import', 'tsx', script, ...rest], { stdio: 'inherit' });
  status = Math.max(status, r.status ?? 1);
}
process.exitCode = status;
