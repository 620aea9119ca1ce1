//! A small nf_tables client over NETLINK_NETFILTER: tables, chains, sets and maps,
//! elements, and rules built from a handful of expressions, sent as one atomic batch.
//!
//! Why our own: netwright needs a DNAT whose address and port come from a map lookup
//! (`dnat to ip daddr . meta l4proto . th dport map @m`) so that publishing a port is
//! one element, not one rule; the crates available either spawn `nft` or cannot build
//! that expression. The wire format is the kernel's UAPI (linux/netfilter/nf_tables.h).

use std::io;
use std::os::fd::AsRawFd;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

mod batch;
mod expr;

pub use batch::{Batch, Elem, SetSpec};
pub use expr::*;

// nfnetlink / nf_tables constants (UAPI).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
pub const NFT_MSG_TRACE: u16 = 17;
/// NFT_MSG_NEWGEN's attribute: the ruleset generation (be32).
const NFTA_GEN_ID: u16 = 1;
/// SOL_SOCKET option: the socket's network namespace's cookie (u64, unique within a boot).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// SOL_NETLINK option: acknowledgements carry no copy of the request.
const NETLINK_CAP_ACK: libc::c_int = 10;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
pub const NFPROTO_BRIDGE: u8 = 7;

/// Netfilter hooks (same numbers in the ip and bridge families).
pub mod hook {
    pub const PREROUTING: u32 = 0;
    pub const INPUT: u32 = 1;
    pub const FORWARD: u32 = 2;
    pub const OUTPUT: u32 = 3;
    pub const POSTROUTING: u32 = 4;
}

/// nft's datatype numbers, recorded on sets so `nft list` prints them properly.
pub mod datatype {
    pub const IPV4_ADDR: u32 = 7;
    pub const IPV6_ADDR: u32 = 8;
    pub const INET_PROTO: u32 = 12;
    pub const INET_SERVICE: u32 = 13;
    pub const IFNAME: u32 = 41;
    /// A plain integer (nft's `integer`): a numgen or hash result as a map key.
    pub const INTEGER: u32 = 4;
    /// A verdict map's data (`vmap`): NFT_DATA_VERDICT.
    pub const VERDICT: u32 = 0xffff_ff00;
    /// A concatenation, encoded as nft does: 6 bits per component type.
    pub fn concat(types: &[u32]) -> u32 {
        types.iter().fold(0, |acc, t| (acc << 6) | t)
    }
}

// 32-bit data registers (NFT_REG32_00..); NFT_REG_1 is the first 16-byte register.
pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
pub const REG32_00: u32 = 8;

pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;

const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;

pub struct Nftables {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Transactions committed through this socket (each adds one to the generation).
    commits: u32,
}

impl Nftables {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Acknowledgements without a copy of each request: a batch of thousands of messages
        // then fits the receive buffer (NETLINK_CAP_ACK).
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int option value on our own socket.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_CAP_ACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        Ok(Self { sock, seq: 1, buf: crate::kernel::recv_buffer(), commits: 0 })
    }

    /// Room for `acks` acknowledgements in the receive buffer (a big batch's).
    fn room_for_acks(&self, acks: usize) {
        // An ack is a netlink header and an error header: 36 bytes, twice that with slack.
        let size = (acks * 72) as libc::c_int;
        if size > 128 * 1024 {
            // SAFETY: setsockopt with a valid int option value on our own socket.
            unsafe {
                libc::setsockopt(
                    self.sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                );
            }
        }
    }

    pub(crate) fn header(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) {
        let len = 16 + 4 + attrs.len();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.push(family);
        out.push(0); // NFNETLINK_V0
        out.extend_from_slice(&res_id.to_be_bytes());
        out.extend_from_slice(attrs);
    }

    /// True when the table exists.
    pub fn has_table(&mut self, family: u8, table: &str) -> io::Result<bool> {
        let attrs = Attrs::new().str(1, table);
        let mut out = Vec::new();
        self.seq += 1;
        let seq = self.seq;
        Self::header(
            &mut out,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family,
            0,
            &attrs.0,
        );
        self.sock.send(&out, 0)?;
        let mut found = false;
        loop {
            for (ty, mseq, err) in self.recv()? {
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        return match err {
                            0 => Ok(found),
                            e if e == -libc::ENOENT => Ok(false),
                            e => Err(io::Error::from_raw_os_error(-e)),
                        };
                    }
                    NLMSG_DONE => return Ok(found),
                    _ => found = true,
                }
            }
        }
    }

    /// Commits a batch atomically. On error nothing of it is applied; the error says
    /// which message (0-based) the kernel refused.
    pub fn commit(&mut self, batch: &Batch) -> Result<(), (usize, io::Error)> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        self.seq += 1;
        let begin = self.seq;
        Self::header(&mut out, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, begin, 0, NFNL_SUBSYS_NFTABLES, &[]);
        let first = self.seq + 1;
        for (msg, flags, attrs) in &batch.msgs {
            self.seq += 1;
            Self::header(
                &mut out,
                (NFNL_SUBSYS_NFTABLES << 8) | msg,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                self.seq,
                batch.family,
                0,
                &attrs.0,
            );
        }
        let last = self.seq;
        self.seq += 1;
        Self::header(&mut out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, self.seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
        // A batch is one datagram: make room for big ones (thousands of elements), as nft does.
        if out.len() > 128 * 1024 {
            let size = (out.len() * 2) as libc::c_int;
            // SAFETY: setsockopt with a valid int option value.
            unsafe {
                libc::setsockopt(
                    self.sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                );
            }
        }
        self.room_for_acks(batch.msgs.len());
        self.sock.send(&out, 0).map_err(|e| (0, e))?;
        // One ack per message, or errors; a failed batch stops early, so stop at the first error.
        let mut acked = 0;
        let total = (last - first + 1) as usize;
        while acked < total {
            for (ty, seq, err) in self.recv().map_err(|e| (0, e))? {
                if ty != NLMSG_ERROR || seq < first || seq > last {
                    continue;
                }
                if err != 0 {
                    return Err(((seq - first) as usize, io::Error::from_raw_os_error(-err)));
                }
                acked += 1;
            }
        }
        self.commits += 1;
        Ok(())
    }

    /// How many transactions this socket has committed.
    pub fn commits(&self) -> u32 {
        self.commits
    }

    /// The namespace's ruleset generation: nf_tables adds one for every transaction
    /// committed in the namespace, by anyone (NFT_MSG_GETGEN).
    pub fn generation(&mut self) -> io::Result<u32> {
        let mut out = Vec::new();
        self.seq += 1;
        let seq = self.seq;
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN;
        Self::header(&mut out, ty, NLM_F_REQUEST | NLM_F_ACK, seq, 0, 0, &[]);
        self.sock.send(&out, 0)?;
        let mut found = None;
        loop {
            for m in recv_msgs(&self.sock, &mut self.buf)? {
                if m.seq != seq {
                    continue;
                }
                if m.ty == NLMSG_ERROR {
                    return match (m.err, found) {
                        (0, Some(g)) => Ok(g),
                        (0, None) => Err(io::Error::other("nf_tables answered without a generation")),
                        (e, _) => Err(io::Error::from_raw_os_error(-e)),
                    };
                }
                if m.ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                    let attrs = attrs_of(m.payload.get(4..).unwrap_or_default());
                    found = attrs
                        .iter()
                        .find(|(t, _)| *t == NFTA_GEN_ID)
                        .and_then(|(_, v)| Some(u32::from_be_bytes((*v).try_into().ok()?)));
                }
            }
        }
    }

    /// The cookie of the socket's network namespace: unlike its inode number, never
    /// reused within a boot.
    pub fn netns_cookie(&self) -> io::Result<u64> {
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into a live u64.
        let r = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(cookie) }
    }

    /// Closes the socket on a thread of its own: the way for a long-lived process that
    /// serves many containers (the DNS resolver). [`Self::close_detached`]'s child would
    /// stay a zombie for as long as such a process lives, and still copies a descriptor
    /// table that grows with every container served (when that child was a fork, the
    /// copies were most of the resolver's time per adopted namespace at 3,000 containers:
    /// copy_page_range and dup_fd).
    pub fn close_in_background(self) {
        // If no thread can be made, close here (and wait).
        let _ = std::thread::Builder::new().name("nft-close".into()).spawn(move || drop(self));
    }

    /// Closes the socket without making the caller wait. Closing an nf_tables socket makes
    /// the kernel finish freeing what earlier transactions deleted, which waits for an RCU
    /// grace period (nft_rcv_nl_event → nf_tables_trans_destroy_flush_work: ~10 ms here,
    /// HZ=250) — also at exit, where the process's parent would wait for it. The deletion
    /// itself is committed and in force already, so a child that shares our memory (no
    /// page tables copied: a fork cost ~0.4 ms per command) holds the last reference and
    /// does that waiting instead. For short-lived commands only: the child is reaped by
    /// init once the command has exited (long-lived processes use
    /// [`Self::close_in_background`]).
    pub fn close_detached(self) {
        let Ok((r, w)) = nix::unistd::pipe() else { return };
        let r = std::os::fd::IntoRawFd::into_raw_fd(r);
        let arg = ((self.sock.as_raw_fd() as u32 as usize) << 32) | r as u32 as usize;
        // A stack of its own, never unmapped: the child may run on it after we return.
        // SAFETY: an anonymous private mapping; checked before use.
        let stack = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                HOLDER_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if stack != libc::MAP_FAILED {
            // SAFETY: the child runs `hold_and_close` on its own stack (the top of the
            // mapping, which is never unmapped) and touches nothing else of ours: its
            // argument travels in the pointer's bits. CLONE_VM without CLONE_THREAD: its
            // own process with its own copy of the descriptor table, so it holds a
            // reference to the socket. Exit signal 0: no SIGCHLD, and no plain wait()
            // of ours or a runtime's reaps it by mistake.
            unsafe {
                let top = (stack as *mut u8).add(HOLDER_STACK).cast();
                libc::clone(hold_and_close, top, libc::CLONE_VM, arg as *mut libc::c_void);
            }
        }
        // Socket first, then the pipe: the child's EOF means ours is closed. (Without a
        // child, this close is the last and waits here.)
        drop(self);
        drop(w);
        // SAFETY: r is the pipe's read end, owned here and closed once.
        unsafe { libc::close(r) };
    }

    /// (type, seq, error code for NLMSG_ERROR) of each message in one datagram.
    fn recv(&mut self) -> io::Result<Vec<(u16, u32, i32)>> {
        Ok(recv_msgs(&self.sock, &mut self.buf)?.into_iter().map(|m| (m.ty, m.seq, m.err)).collect())
    }

    /// Sends one dump request and hands each answer's attributes (after the nfgenmsg
    /// header) to `each`. `missing_ok`: ENOENT ends the dump with what was found.
    fn dump(
        &mut self,
        family: u8,
        msg: u16,
        attrs: Attrs,
        missing_ok: bool,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        let mut out = Vec::new();
        self.seq += 1;
        let seq = self.seq;
        Self::header(&mut out, (NFNL_SUBSYS_NFTABLES << 8) | msg, NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0, &attrs.0);
        self.sock.send(&out, 0)?;
        loop {
            for m in recv_msgs(&self.sock, &mut self.buf)? {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR if m.err == -libc::ENOENT && missing_ok => return Ok(()),
                    NLMSG_ERROR if m.err != 0 => return Err(io::Error::from_raw_os_error(-m.err)),
                    NLMSG_ERROR => {}
                    _ => each(m.payload.get(4..).unwrap_or_default()),
                }
            }
        }
    }

    /// The rules of one table: (chain, handle, comment); none when the table is missing.
    pub fn rules(&mut self, family: u8, table: &str) -> io::Result<Vec<RuleInfo>> {
        let mut rules = Vec::new();
        self.dump(family, NFT_MSG_GETRULE, Attrs::new().str(1, table), true, |payload| {
            let mut r = RuleInfo::default();
            for (ty, v) in attrs_of(payload) {
                match ty {
                    2 => r.chain = cstr(v),
                    3 if v.len() == 8 => r.handle = u64::from_be_bytes(v.try_into().unwrap()),
                    7 => r.comment = udata_comment(v),
                    _ => {}
                }
            }
            rules.push(r);
        })?;
        Ok(rules)
    }

    /// The elements of one set or map: (key, data). Interval ends are left out. A missing
    /// set is an error (ENOENT).
    pub fn set_elems(&mut self, family: u8, table: &str, set: &str) -> io::Result<Vec<Elem>> {
        // NFTA_DATA_VALUE inside NFTA_SET_ELEM_KEY / _DATA.
        let value = |v: &[u8]| attrs_of(v).into_iter().find(|(t, _)| *t == 1).map(|(_, d)| d.to_vec());
        let mut elems = Vec::new();
        self.dump(family, NFT_MSG_GETSETELEM, Attrs::new().str(1, table).str(2, set), false, |payload| {
            // NFTA_SET_ELEM_LIST_ELEMENTS, each a NFTA_LIST_ELEM.
            for (_, l) in attrs_of(payload).into_iter().filter(|(t, _)| *t == 3) {
                for (_, e) in attrs_of(l) {
                    let (mut key, mut data, mut goto, mut flags) = (None, None, None, 0u32);
                    for (t, v) in attrs_of(e) {
                        match t {
                            1 => key = value(v),
                            2 => {
                                data = value(v);
                                goto = verdict_chain(v);
                            }
                            3 if v.len() == 4 => flags = u32::from_be_bytes(v.try_into().unwrap()),
                            _ => {}
                        }
                    }
                    // NFT_SET_ELEM_INTERVAL_END
                    if let (Some(key), 0) = (key, flags & 1) {
                        let mut el = Elem::new(key, data);
                        el.goto = goto;
                        elems.push(el);
                    }
                }
            }
        })?;
        Ok(elems)
    }
}

/// A verdict map element's `goto CHAIN` (NFTA_DATA_VERDICT: code, chain).
fn verdict_chain(data: &[u8]) -> Option<String> {
    let (_, v) = attrs_of(data).into_iter().find(|(t, _)| *t == 2)?;
    let attrs = attrs_of(v);
    let code =
        attrs.iter().find(|(t, _)| *t == 1).and_then(|(_, c)| Some(i32::from_be_bytes((*c).try_into().ok()?)))?;
    let chain = attrs.iter().find(|(t, _)| *t == 2).map(|(_, c)| cstr(c))?;
    (code == NFT_GOTO).then_some(chain)
}

#[derive(Debug, Default, Clone)]
pub struct RuleInfo {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// One netlink message: header fields and what follows the header.
pub struct Msg {
    pub ty: u16,
    pub seq: u32,
    /// For NLMSG_ERROR: the (negative) errno, 0 for an ack.
    pub err: i32,
    pub payload: Vec<u8>,
}

/// The messages of one datagram.
pub fn recv_msgs(sock: &Socket, buf: &mut Vec<u8>) -> io::Result<Vec<Msg>> {
    let n = crate::kernel::recv_into(sock.as_raw_fd(), buf)?;
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= n {
        let b = &buf[off..n];
        let len = (u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize).min(b.len());
        let ty = u16::from_ne_bytes(b[4..6].try_into().unwrap());
        let seq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
        let err =
            if ty == NLMSG_ERROR && b.len() >= 20 { i32::from_ne_bytes(b[16..20].try_into().unwrap()) } else { 0 };
        if len < 16 {
            break;
        }
        out.push(Msg { ty, seq, err, payload: b[16..len].to_vec() });
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// Netlink attributes (type without flag bits, value).
pub fn attrs_of(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

/// A NUL-terminated netlink string.
pub fn cstr(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|c| *c == 0).next().unwrap_or_default()).into_owned()
}

/// The comment in a rule's userdata (nft's TLVs: type, length, value).
pub(super) fn udata_comment(mut v: &[u8]) -> Option<String> {
    while v.len() >= 2 {
        let (ty, len) = (v[0], v[1] as usize);
        let val = v.get(2..2 + len)?;
        if ty == 0 {
            return Some(cstr(val));
        }
        v = &v[2 + len..];
    }
    None
}

/// An interface name as a 16-byte set key (IFNAMSIZ, zero padded).
pub fn ifname_key(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.resize(16, 0);
    k
}

/// The stack of [`Nftables::close_detached`]'s child: it makes a few system calls only.
const HOLDER_STACK: usize = 16 * 1024;

/// [`Nftables::close_detached`]'s child, in our memory: keeps only the socket and the pipe's
/// read end (both in `arg`), waits for EOF (the caller closed its copy of the socket), closes
/// the socket — the kernel's wait for the grace period happens here — and returns (glibc's
/// clone then exits the child).
extern "C" fn hold_and_close(arg: *mut libc::c_void) -> libc::c_int {
    let (sock, r) = (((arg as usize) >> 32) as u32, (arg as usize) as u32);
    let (lo, hi) = (sock.min(r), sock.max(r));
    // SAFETY: raw system calls on descriptor numbers in this process's own table. Only
    // async-signal-safe calls, no allocation (we share the caller's heap and TLS); errno is
    // the caller's thread's and is written only if a call fails (read: EINTR only).
    unsafe {
        if lo > 0 {
            libc::close_range(0, lo - 1, 0);
        }
        if hi > lo + 1 {
            libc::close_range(lo + 1, hi - 1, 0);
        }
        libc::close_range(hi + 1, u32::MAX, 0);
        let mut b = [0u8; 1];
        while libc::read(r as i32, b.as_mut_ptr().cast(), 1) < 0 && *libc::__errno_location() == libc::EINTR {}
        libc::close(sock as i32);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_aligned_and_nested() {
        let a = Attrs::new().str(1, "ab").nested(2, Attrs::new().be32(1, 7));
        // "ab\0" → 4 + 3 = 7, padded to 8; nested: 4 + 8.
        assert_eq!(a.0.len(), 8 + 12);
        let mut nested_header = 12u16.to_ne_bytes().to_vec();
        nested_header.extend_from_slice(&(2u16 | 0x8000).to_ne_bytes());
        assert_eq!(&a.0[8..12], &nested_header[..]);
        assert_eq!(&a.0[16..20], &7u32.to_be_bytes());
    }

    #[test]
    fn concat_types_pack_six_bits_each() {
        assert_eq!(datatype::concat(&[datatype::IPV4_ADDR, datatype::INET_SERVICE]), (7 << 6) | 13);
        assert_eq!(ifname_key("br0").len(), 16);
    }
}
