// `splitvm ctl SOCKET VERB [NAME]`: a small client of the control API
// (server.ts) for operators and scripts. Prints the answer (JSON, or the
// metrics text) on stdout; an error is one sentence on stderr and a
// non-zero exit: 1 when the API refused the request, 2 for a usage mistake.
import http from 'node:http';

export const CTL_USAGE = `usage: splitvm ctl SOCKET VERB
  info               the VM: state, uptime, vCPUs, memory and every device (GET /vm)
  pause | resume     stop or continue the vCPUs and the devices' queues (PUT /vm/state)
  stop               stop the guest and shut the devices down (POST /vm/stop)
  restart DEVICE     restart a device process; its queues resume (POST /devices/DEVICE/restart)
  metrics            Prometheus metrics (GET /metrics)
SOCKET is the path given to --api-socket.`;

export class CtlUsageError extends Error {}

interface Call {
  method: string;
  path: string;
  body?: string;
}

export function parseCtlArgs(argv: string[]): { socket: string; call: Call } {
  const [socket, verb, ...rest] = argv;
  if (!socket || !verb) throw new CtlUsageError('splitvm ctl needs a SOCKET and a VERB (try: splitvm ctl --help)');
  const none = (): void => {
    if (rest.length > 0) throw new CtlUsageError(`"${verb}" takes no argument, not "${rest[0]}"`);
  };
  switch (verb) {
    case 'info':
      none();
      return { socket, call: { method: 'GET', path: '/vm' } };
    case 'pause':
    case 'resume':
      none();
      return { socket, call: { method: 'PUT', path: '/vm/state', body: JSON.stringify({ state: verb === 'pause' ? 'paused' : 'running' }) } };
    case 'stop':
      none();
      return { socket, call: { method: 'POST', path: '/vm/stop' } };
    case 'restart':
      if (rest.length !== 1) throw new CtlUsageError('"restart" needs one DEVICE name (see splitvm ctl SOCKET info)');
      return { socket, call: { method: 'POST', path: `/devices/${encodeURIComponent(rest[0]!)}/restart` } };
    case 'metrics':
      none();
      return { socket, call: { method: 'GET', path: '/metrics' } };
    default:
      throw new CtlUsageError(`unknown verb "${verb}" (info, pause, resume, stop, restart, metrics)`);
  }
}

/** Sends the request; resolves with the status and body. */
export function request(socket: string, call: Call): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method: call.method, path: call.path, headers: call.body ? { 'content-type': 'application/json' } : {} }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(call.body);
  });
}

/** Runs the command; resolves with the exit status. */
export async function ctlMain(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(`${CTL_USAGE}\n`);
    return 0;
  }
  const { socket, call } = parseCtlArgs(argv);
  let reply;
  try {
    reply = await request(socket, call);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such socket' : code === 'ECONNREFUSED' ? 'nothing listens there' : code === 'EACCES' ? 'permission denied' : (code ?? (e as Error).message);
    process.stderr.write(`splitvm: cannot reach the control API at ${socket}: ${why}\n`);
    return 1;
  }
  if (reply.status >= 400) {
    let message = reply.body.trim();
    try {
      message = (JSON.parse(reply.body) as { error: string }).error;
    } catch {
      // Not our API's JSON: print what came back.
    }
    process.stderr.write(`splitvm: ${message}\n`);
    return 1;
  }
  process.stdout.write(reply.body);
  return 0;
}
