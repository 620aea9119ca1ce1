//! Rule expressions and the netlink attribute builder they are encoded with.

use super::*;

/// Attribute builder: netlink TLVs, 4-byte aligned.
#[derive(Default, Clone)]
pub struct Attrs(pub(super) Vec<u8>);

impl Attrs {
    pub fn new() -> Self {
        Self(Vec::new())
    }
    pub fn bytes(mut self, ty: u16, data: &[u8]) -> Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }
    pub fn str(self, ty: u16, s: &str) -> Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.bytes(ty, &v)
    }
    pub fn be32(self, ty: u16, v: u32) -> Self {
        self.bytes(ty, &v.to_be_bytes())
    }
    pub fn nested(self, ty: u16, inner: Attrs) -> Self {
        self.bytes(ty | NLA_F_NESTED, &inner.0)
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// One expression of a rule.
#[derive(Clone, Debug)]
pub enum Expr {
    /// Load metadata (key: NFT_META_*) into `dreg`.
    Meta {
        key: u32,
        dreg: u32,
    },
    /// Load `len` bytes at `offset` of header `base` (0 link, 1 network, 2 transport).
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// Compare `sreg` with `data` (op: 0 eq, 1 neq).
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    /// `sreg & mask ^ 0` into `dreg`.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
    },
    /// Conntrack key (NFT_CT_*) into `dreg`.
    Ct {
        key: u32,
        dreg: u32,
    },
    /// Conntrack key of one direction's tuple (0 original, 1 reply) into `dreg`.
    CtDir {
        key: u32,
        dir: u8,
        dreg: u32,
    },
    /// Set metadata (key: NFT_META_*) from `sreg`.
    MetaSet {
        key: u32,
        sreg: u32,
    },
    /// fib daddr type → dreg.
    FibDaddrType {
        dreg: u32,
    },
    /// Set membership (or map lookup into `dreg`); `invert` for `!= @set`.
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    /// Load constant bytes into a data register.
    ImmediateData {
        dreg: u32,
        data: Vec<u8>,
    },
    /// DNAT to the address and port held in registers (`family`: NFPROTO_IPV4 or _IPV6).
    Dnat {
        family: u8,
        reg_addr: u32,
        reg_port: u32,
    },
    /// DNAT to the address in `reg_addr`, the port unchanged.
    DnatAddr {
        family: u8,
        reg_addr: u32,
    },
    /// `numgen random mod modulus` into `dreg`: 0..modulus-1, uniformly.
    Numgen {
        dreg: u32,
        modulus: u32,
    },
    /// `jhash` of `len` bytes at `sreg`, `mod modulus`, into `dreg` (session affinity).
    Jhash {
        sreg: u32,
        len: u32,
        modulus: u32,
        seed: u32,
        dreg: u32,
    },
    Masquerade,
    Counter,
    /// accept / drop / jump chain.
    Verdict {
        code: i32,
        chain: Option<String>,
    },
}

pub mod meta {
    pub const IIFNAME: u32 = 6;
    pub const OIFNAME: u32 = 7;
    pub const L4PROTO: u32 = 16;
    pub const BRI_IIFNAME: u32 = 18;
    pub const NFTRACE: u32 = 12;
}
pub mod ct {
    pub const PROTOCOL: u32 = 10;
    pub const PROTO_SRC: u32 = 11;
    pub const PROTO_DST: u32 = 12;
    pub const SRC_IP: u32 = 19;
    pub const DST_IP: u32 = 20;
}
pub const NFT_CT_STATUS: u32 = 2;
pub const IPS_DST_NAT: u32 = 0x20;
pub const RTN_LOCAL: u32 = 2;
/// IPPROTO_UDP, as `meta l4proto` loads it (one byte).
pub const IPPROTO_UDP: u8 = 17;

impl Expr {
    pub(super) fn encode(&self) -> Attrs {
        let (name, data) = match self {
            Expr::Meta { key, dreg } => ("meta", Attrs::new().be32(2, *key).be32(1, *dreg)),
            Expr::Payload { base, offset, len, dreg } => {
                ("payload", Attrs::new().be32(1, *dreg).be32(2, *base).be32(3, *offset).be32(4, *len))
            }
            Expr::Cmp { sreg, op, data } => {
                ("cmp", Attrs::new().be32(1, *sreg).be32(2, *op).nested(3, Attrs::new().bytes(1, data)))
            }
            Expr::Bitwise { sreg, dreg, mask } => (
                "bitwise",
                Attrs::new()
                    .be32(1, *sreg)
                    .be32(2, *dreg)
                    .be32(3, mask.len() as u32)
                    .nested(4, Attrs::new().bytes(1, mask))
                    .nested(5, Attrs::new().bytes(1, &vec![0; mask.len()])),
            ),
            Expr::Ct { key, dreg } => ("ct", Attrs::new().be32(1, *dreg).be32(2, *key)),
            Expr::CtDir { key, dir, dreg } => ("ct", Attrs::new().be32(1, *dreg).be32(2, *key).bytes(3, &[*dir])),
            Expr::MetaSet { key, sreg } => ("meta", Attrs::new().be32(2, *key).be32(3, *sreg)),
            // NFTA_FIB_RESULT_ADDRTYPE = 3, NFTA_FIB_F_DADDR = 2
            Expr::FibDaddrType { dreg } => ("fib", Attrs::new().be32(1, *dreg).be32(2, 3).be32(3, 2)),
            Expr::Lookup { set, sreg, dreg, invert } => {
                let mut a = Attrs::new().str(1, set).be32(2, *sreg);
                if let Some(d) = dreg {
                    a = a.be32(3, *d);
                }
                if *invert {
                    a = a.be32(5, 1);
                }
                ("lookup", a)
            }
            // NFT_NAT_DNAT = 1
            Expr::Dnat { family, reg_addr, reg_port } => {
                ("nat", Attrs::new().be32(1, 1).be32(2, *family as u32).be32(3, *reg_addr).be32(5, *reg_port))
            }
            Expr::DnatAddr { family, reg_addr } => {
                ("nat", Attrs::new().be32(1, 1).be32(2, *family as u32).be32(3, *reg_addr))
            }
            // NFTA_NG_DREG, NFTA_NG_MODULUS, NFTA_NG_TYPE = NFT_NG_RANDOM (1)
            Expr::Numgen { dreg, modulus } => ("numgen", Attrs::new().be32(1, *dreg).be32(2, *modulus).be32(3, 1)),
            // NFTA_HASH_SREG, _DREG, _LEN, _MODULUS, _SEED, _TYPE = NFT_HASH_JENKINS (0)
            Expr::Jhash { sreg, len, modulus, seed, dreg } => (
                "hash",
                Attrs::new().be32(1, *sreg).be32(2, *dreg).be32(3, *len).be32(4, *modulus).be32(5, *seed).be32(7, 0),
            ),
            Expr::ImmediateData { dreg, data } => {
                ("immediate", Attrs::new().be32(1, *dreg).nested(2, Attrs::new().bytes(1, data)))
            }
            Expr::Masquerade => ("masq", Attrs::new()),
            Expr::Counter => ("counter", Attrs::new()),
            Expr::Verdict { code, chain } => {
                let mut v = Attrs::new().be32(1, *code as u32);
                if let Some(c) = chain {
                    v = v.str(2, c);
                }
                ("immediate", Attrs::new().be32(1, REG_VERDICT).nested(2, Attrs::new().nested(2, v)))
            }
        };
        Attrs::new().str(1, name).nested(2, data)
    }
}
