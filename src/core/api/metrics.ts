// GET /metrics: the Prometheus text exposition format (version 0.0.4) of a
// VM's (or a vhost-user backend's) devices, vCPUs and the core itself.
// Written here rather than with prom-client: device counters arrive already
// aggregated from other processes (a latency histogram as cumulative
// buckets), which a client library's registry can only re-observe, not take
// as they are; the format itself is a few lines.
import fs from 'node:fs';
import v8 from 'node:v8';
import { LATENCY_BUCKETS_US, LATENCY_COUNT, LATENCY_SUM_US, latencyBucketName } from '../../ipc/latency.js';
import type { DeviceInfo } from '../supervisor/device-process.js';

export type Labels = Record<string, string>;
export interface Sample {
  labels: Labels;
  value: number;
  /** _bucket, _sum or _count for histograms. */
  suffix?: string;
}
export interface MetricFamily {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  samples: Sample[];
}

/** One device as /metrics sees it: what the supervisor knows, and its counters (null when it did not answer). */
export interface DeviceSnapshot {
  info: DeviceInfo;
  stats: Record<string, number> | null;
}

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const formatValue = (v: number): string => (Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN');

export function render(families: MetricFamily[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',');
      out.push(`${f.name}${s.suffix ?? ''}${labels ? `{${labels}}` : ''} ${formatValue(s.value)}`);
    }
  }
  return out.join('\n') + '\n';
}

/** Device counters that are bytes moved, and the direction each one is. */
const BYTE_COUNTERS: Record<string, string> = { bytesRead: 'read', bytesWritten: 'write', rxBytes: 'rx', txBytes: 'tx' };
/** Device counters that are errors, and their type label. */
const ERROR_COUNTERS: Record<string, string> = { queueErrors: 'queue', ioErrors: 'io', unsupported: 'unsupported', rxDropped: 'rx_dropped', txDropped: 'tx_dropped' };
/** Counters shown under their own metric (everything else is a splitvm_device_stat). */
const NAMED = new Set(['requests', 'completions', 'kicks', 'interrupts', 'inFlight', LATENCY_COUNT, LATENCY_SUM_US, ...LATENCY_BUCKETS_US.map(latencyBucketName), ...Object.keys(BYTE_COUNTERS), ...Object.keys(ERROR_COUNTERS)]);

export function deviceFamilies(devices: DeviceSnapshot[]): MetricFamily[] {
  const fam = (name: string, type: MetricFamily['type'], help: string): MetricFamily => ({ name, type, help, samples: [] });
  const up = fam('splitvm_device_up', 'gauge', 'Whether the device process answered (1) or not (0).');
  const restarts = fam('splitvm_device_restarts_total', 'counter', 'Device processes started again after a death or on request, queues resumed.');
  const failed = fam('splitvm_device_failed', 'gauge', 'Whether the device fails every request until the guest resets it.');
  const requests = fam('splitvm_device_requests_total', 'counter', 'Requests (descriptor chains) the device took.');
  const completions = fam('splitvm_device_completions_total', 'counter', 'Requests the device completed.');
  const inFlight = fam('splitvm_device_in_flight', 'gauge', 'Requests taken and not yet completed.');
  const kicks = fam('splitvm_device_kicks_total', 'counter', 'Notifications (kicks) from the driver the device read.');
  const interrupts = fam('splitvm_device_interrupts_total', 'counter', 'Interrupts the device raised.');
  const bytes = fam('splitvm_device_bytes_total', 'counter', 'Bytes moved by the device, by direction.');
  const errors = fam('splitvm_device_errors_total', 'counter', 'Errors by type: malformed queues, backend I/O errors, unsupported requests, dropped frames.');
  const latency = fam('splitvm_device_request_duration_seconds', 'histogram', 'From taking a request to completing it, inside the device process.');
  const stat = fam('splitvm_device_stat', 'gauge', "Every other counter of the device's own kind, by name.");
  for (const { info, stats } of devices) {
    const l = { device: info.name, kind: info.kind };
    up.samples.push({ labels: l, value: stats ? 1 : 0 });
    restarts.samples.push({ labels: l, value: info.restarts });
    failed.samples.push({ labels: l, value: info.state === 'failed' ? 1 : 0 });
    if (!stats) continue;
    const put = (f: MetricFamily, key: string) => stats[key] !== undefined && f.samples.push({ labels: l, value: stats[key]! });
    put(requests, 'requests');
    put(completions, 'completions');
    put(inFlight, 'inFlight');
    put(kicks, 'kicks');
    put(interrupts, 'interrupts');
    /** The counters of `table` the device has, as samples of `f` labelled `label` = the table's value. */
    const labelled = (f: MetricFamily, table: Record<string, string>, label: string) => {
      for (const [key, value] of Object.entries(table)) if (stats[key] !== undefined) f.samples.push({ labels: { ...l, [label]: value }, value: stats[key]! });
    };
    labelled(bytes, BYTE_COUNTERS, 'direction');
    labelled(errors, ERROR_COUNTERS, 'type');
    if (stats[LATENCY_COUNT] !== undefined) {
      for (const le of LATENCY_BUCKETS_US) latency.samples.push({ labels: { ...l, le: String(le / 1e6) }, value: stats[latencyBucketName(le)] ?? 0, suffix: '_bucket' });
      latency.samples.push({ labels: { ...l, le: '+Inf' }, value: stats[LATENCY_COUNT]!, suffix: '_bucket' });
      latency.samples.push({ labels: l, value: (stats[LATENCY_SUM_US] ?? 0) / 1e6, suffix: '_sum' });
      latency.samples.push({ labels: l, value: stats[LATENCY_COUNT]!, suffix: '_count' });
    }
    for (const [key, value] of Object.entries(stats)) if (!NAMED.has(key)) stat.samples.push({ labels: { ...l, stat: key }, value });
  }
  return [up, restarts, failed, requests, completions, inFlight, kicks, interrupts, bytes, errors, latency, stat];
}

/**
 * /proc/self/smaps_rollup, opened while the core may still open files (the
 * control API starts before the seal) and read again from offset 0 at each
 * scrape: a sealed core can no longer open it.
 */
let smapsRollup = -1;
export function openCoreMemoryFile(): void {
  if (smapsRollup >= 0) return;
  try {
    smapsRollup = fs.openSync('/proc/self/smaps_rollup', 'r');
  } catch {
    // an old kernel: V8's heap only
  }
}

/** The core process's own memory: resident, private (what it alone costs the host) and V8's heap. */
export function coreMemoryFamily(): MetricFamily {
  const samples: Sample[] = [{ labels: { type: 'heap_used' }, value: v8.getHeapStatistics().used_heap_size }];
  if (smapsRollup >= 0) {
    const buf = Buffer.alloc(4096);
    const text = buf.subarray(0, fs.readSync(smapsRollup, buf, 0, buf.length, 0)).toString('latin1');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
    samples.push({ labels: { type: 'rss' }, value: kb('Rss') * 1024 }, { labels: { type: 'private' }, value: (kb('Private_Clean') + kb('Private_Dirty')) * 1024 });
  }
  return { name: 'splitvm_core_memory_bytes', type: 'gauge', help: 'Memory of the core process, by type.', samples };
}
