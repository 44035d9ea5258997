// The core↔device control channel: schema, framing and the channel class.
export * from './messages.js';
export * from './codec.js';
export * from './channel.js';
