// The device harness: drive a real device process from the host side
// (tests, benchmarks, fuzzing).
export { DeviceHarness, DeviceStartError, DriverMemory, DEVICE_TEST_SECCOMP, FOUR_GIB, MiB, type HarnessOptions, type ActivateOptions, type ExitStatus } from './harness.js';
export { DriverQueue, type Buf, type RawDesc, type UsedElem, type RingAddresses } from './driver-queue.js';
export { BlkDriver, dwzSegments, type BlkReply, type BlkRequestSpec, type PendingRequest } from './blk-driver.js';
export { deviceEntry } from '../../core/jail/launch.js';
export { NetDriver, testFrame, type ReceivedFrame } from './net-driver.js';
export { P9Client, P9ClientError, QueueTransport, SocketTransport, errnoOf, type P9Attr, type P9Dirent, type P9SetAttr, type P9Transport } from './p9-driver.js';
export { VhostUserFrontend, memTablePayload, u64, u64Bytes, vringAddr, vringState, type FrontendOptions, type FrontendRegion, type Reply } from './vhost-user-frontend.js';
