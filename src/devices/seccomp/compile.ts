// Turns parsed policy rules into a loaded seccomp filter through libseccomp:
// default action, attributes (TSYNC so every Node thread is covered, or
// none for a filter one thread stacks on its own; KILL_PROCESS for a
// foreign architecture), one libseccomp rule per alternative, then
// no_new_privs and load.
import { prctl } from '../../sys/libc.js';
import {
  SCMP_ACT_ALLOW,
  SCMP_ACT_KILL_PROCESS,
  SCMP_ACT_LOG,
  SCMP_FLTATR_ACT_BADARCH,
  SCMP_FLTATR_CTL_NNP,
  SCMP_FLTATR_CTL_OPTIMIZE,
  SCMP_FLTATR_CTL_TSYNC,
  SeccompFilter,
  scmpActErrno,
} from './libseccomp.js';
import { PolicyError, type PolicyRule } from './policy.js';

const PR_SET_NO_NEW_PRIVS = 38;

/** What a call not in the policy gets: the process dies (never one thread: Node would hang), or is only logged. */
export type DefaultAction = 'kill' | 'log';

/**
 * Which threads a filter confines: every thread of the process (TSYNC; it
 * also sets no_new_privs on each), or only the calling one, stacked on the
 * process's filter (which must already have set no_new_privs on it).
 */
export type FilterScope = 'process' | 'thread';

/** Builds the libseccomp filter for `rules`; the caller loads or releases it. */
export function buildFilter(rules: readonly PolicyRule[], defaultAction: DefaultAction, scope: FilterScope = 'process'): SeccompFilter {
  const filter = new SeccompFilter(defaultAction === 'kill' ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_LOG);
  try {
    filter.attr(SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    filter.attr(SCMP_FLTATR_CTL_TSYNC, scope === 'process' ? 1 : 0);
    filter.attr(SCMP_FLTATR_CTL_NNP, scope === 'process' ? 1 : 0);
    filter.attr(SCMP_FLTATR_CTL_OPTIMIZE, 2);
    for (const rule of rules) {
      const action = rule.action.type === 'allow' ? SCMP_ACT_ALLOW : scmpActErrno(rule.action.errno);
      for (const cmps of rule.when ?? [[]]) {
        const rc = filter.addRule(action, rule.nr, cmps);
        if (rc < 0) {
          const [file, line] = splitWhere(rule.where);
          throw new PolicyError(file, line, `libseccomp rejected the rule for ${rule.syscall} (errno ${-rc})`);
        }
      }
    }
    return filter;
  } catch (e) {
    filter.release();
    throw e;
  }
}

/** Loads the filter on every thread of this process (setting no_new_privs first), or on the calling thread only. Irreversible. */
export function loadFilter(rules: readonly PolicyRule[], defaultAction: DefaultAction, scope: FilterScope = 'process'): void {
  const filter = buildFilter(rules, defaultAction, scope);
  try {
    if (scope === 'process') prctl(PR_SET_NO_NEW_PRIVS, 1);
    filter.load();
  } finally {
    filter.release();
  }
}

function splitWhere(where: string): [string, number] {
  const i = where.lastIndexOf(':');
  return [where.slice(0, i), Number(where.slice(i + 1))];
}
