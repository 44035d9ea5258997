// virtio-net constants (virtio 1.2 §5.1) and the Linux tap ioctls the
// device and the core use.

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
export const NET_NUM_QUEUES = 2;

// ---- feature bits ----
export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_F_VERSION_1 = 32;

// ---- configuration space ----
export const CONFIG = { mac: 0, status: 6, maxVirtqueuePairs: 8, mtu: 10, size: 12 } as const;
export const VIRTIO_NET_S_LINK_UP = 1;

/** struct virtio_net_hdr_v1 (with num_buffers, always present in virtio 1.x): 12 bytes. */
export const NET_HDR_BYTES = 12;
export const HDR_NUM_BUFFERS = 10;
export const HDR_FLAGS = 0;
export const HDR_GSO_TYPE = 1;
export const VIRTIO_NET_HDR_GSO_NONE = 0;

export const ETH_HLEN = 14;
export const VLAN_HLEN = 4;
/** The largest frame a GSO packet can be (IP's 64 KiB plus link headers). */
export const MAX_GSO_FRAME = 65535 + ETH_HLEN + VLAN_HLEN;
export const DEFAULT_MTU = 1500;

// ---- tap (linux/if_tun.h) ----
export const TUNSETIFF = 0x400454ca;
export const TUNSETOFFLOAD = 0x400454d0;
export const TUNSETVNETHDRSZ = 0x400454d8;
export const IFF_TAP = 0x0002;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
