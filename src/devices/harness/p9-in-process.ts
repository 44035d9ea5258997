// A 9P transport that hands each message straight to a P9Session in this
// process (no jail, no virtqueue): the session's and journal's unit tests
// and the journal fuzzer drive the session's code without a device process.
import type { P9Transport } from './p9-driver.js';
import type { P9Session } from '../p9/session.js';

export function inProcess(session: P9Session): P9Transport {
  return {
    close() {},
    async rpc(msg) {
      const out = new Uint8Array(1 << 20);
      const r = await session.handle({
        message: msg,
        writeData: (n) => (msg.length >= 23 + n ? [msg.subarray(23, 23 + n)] : null),
        readSpace: (max) => [out.subarray(11, 11 + max)],
        replyCapacity: out.length,
      });
      out.set(r.bytes);
      return out.slice(0, r.bytes.length + r.dataBytes);
    },
  };
}
