//! Batches: tables, chains, sets, elements and rules committed atomically or not at all.

use super::*;

/// A set's shape.
#[derive(Clone, Debug)]
pub struct SetSpec {
    pub name: String,
    pub key_type: u32,
    pub key_len: u32,
    /// For a map: (data type, data length).
    pub data: Option<(u32, u32)>,
    pub interval: bool,
}

/// One set element: key bytes and, for a map, data bytes.
#[derive(Clone, Debug)]
pub struct Elem {
    pub key: Vec<u8>,
    pub data: Option<Vec<u8>>,
    /// A verdict map's element: `goto CHAIN`.
    pub goto: Option<String>,
    /// Shown by `nft list` (`comment "web"`): who the element is for. Not compared: two
    /// elements are the same element whatever their comments say.
    pub comment: Option<String>,
}

impl PartialEq for Elem {
    fn eq(&self, other: &Elem) -> bool {
        self.key == other.key && self.data == other.data && self.goto == other.goto
    }
}

impl Eq for Elem {}

impl std::hash::Hash for Elem {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.key.hash(h);
        self.data.hash(h);
        self.goto.hash(h);
    }
}

impl Elem {
    pub fn new(key: Vec<u8>, data: Option<Vec<u8>>) -> Elem {
        Elem { key, data, goto: None, comment: None }
    }

    /// A verdict map element: the key sends the packet to `chain` (goto).
    pub fn goto(key: Vec<u8>, chain: &str) -> Elem {
        Elem { key, data: None, goto: Some(chain.to_string()), comment: None }
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Elem {
        self.comment = Some(comment.into());
        self
    }
}

/// NFTA_SET_ELEM_USERDATA: where nft keeps an element's comment.
const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// NFTNL_UDATA_SET_ELEM_COMMENT: the comment's type in that userdata (type, length, value).
const UDATA_SET_ELEM_COMMENT: u8 = 0;

/// nft's userdata for an element comment: one TLV holding the NUL-terminated text.
fn elem_comment(c: &str) -> Vec<u8> {
    let mut text: Vec<u8> = c.bytes().take(126).collect();
    text.push(0);
    let mut v = vec![UDATA_SET_ELEM_COMMENT, text.len() as u8];
    v.extend(text);
    v
}

/// A batch of changes, committed atomically or not at all.
pub struct Batch {
    pub(super) family: u8,
    pub(super) msgs: Vec<(u16, u16, Attrs)>,
    next_set_id: u32,
}

impl Batch {
    pub fn new(family: u8) -> Self {
        Self { family, msgs: Vec::new(), next_set_id: 1 }
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The rules this batch adds, as (chain, comment): what a live table is checked against.
    pub fn rules(&self) -> Vec<(String, Option<String>)> {
        self.msgs
            .iter()
            .filter(|(ty, _, _)| *ty == NFT_MSG_NEWRULE)
            .map(|(_, _, a)| {
                let mut chain = String::new();
                let mut comment = None;
                for (ty, v) in attrs_of(&a.0) {
                    match ty {
                        2 => chain = cstr(v),
                        7 => comment = udata_comment(v),
                        _ => {}
                    }
                }
                (chain, comment)
            })
            .collect()
    }

    /// Creates the table if it does not exist.
    pub fn add_table(&mut self, table: &str) -> &mut Self {
        self.msgs.push((NFT_MSG_NEWTABLE, NLM_F_CREATE, Attrs::new().str(1, table)));
        self
    }

    pub fn del_table(&mut self, table: &str) -> &mut Self {
        self.msgs.push((NFT_MSG_DELTABLE, 0, Attrs::new().str(1, table)));
        self
    }

    /// A base chain (hook, priority, type "filter"/"nat", policy accept), created if missing.
    pub fn add_base_chain(&mut self, table: &str, chain: &str, kind: &str, hooknum: u32, priority: i32) -> &mut Self {
        let hook = Attrs::new().be32(1, hooknum).be32(2, priority as u32);
        let a = Attrs::new().str(1, table).str(3, chain).nested(4, hook).be32(5, NF_ACCEPT as u32).str(7, kind);
        self.msgs.push((NFT_MSG_NEWCHAIN, NLM_F_CREATE, a));
        self
    }

    /// A regular chain (a jump target), created if missing and never flushed here.
    pub fn add_chain(&mut self, table: &str, chain: &str) -> &mut Self {
        self.msgs.push((NFT_MSG_NEWCHAIN, NLM_F_CREATE, Attrs::new().str(1, table).str(3, chain)));
        self
    }

    /// Deletes a regular chain (it must have no rules and no references left).
    pub fn del_chain(&mut self, table: &str, chain: &str) -> &mut Self {
        self.msgs.push((NFT_MSG_DELCHAIN, 0, Attrs::new().str(1, table).str(3, chain)));
        self
    }

    /// Deletes a set or map (no rule may reference it any more).
    pub fn del_set(&mut self, table: &str, set: &str) -> &mut Self {
        self.msgs.push((NFT_MSG_DELSET, 0, Attrs::new().str(1, table).str(2, set)));
        self
    }

    /// Removes every rule of a chain.
    pub fn flush_chain(&mut self, table: &str, chain: &str) -> &mut Self {
        self.msgs.push((NFT_MSG_DELRULE, 0, Attrs::new().str(1, table).str(2, chain)));
        self
    }

    /// Appends a rule; its comment is what `nft list` and `netwright trace` show.
    pub fn add_rule(&mut self, table: &str, chain: &str, comment: &str, exprs: &[Expr]) -> &mut Self {
        let mut list = Attrs::new();
        for e in exprs {
            list = list.nested(1, e.encode());
        }
        let mut a = Attrs::new().str(1, table).str(2, chain).nested(4, list);
        if !comment.is_empty() {
            // NFTA_RULE_USERDATA: nft's TLV, type NFTNL_UDATA_RULE_COMMENT = 0, NUL included.
            let text = &comment.as_bytes()[..comment.len().min(250)];
            let mut udata = vec![0, text.len() as u8 + 1];
            udata.extend_from_slice(text);
            udata.push(0);
            a = a.bytes(7, &udata);
        }
        self.msgs.push((NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, a));
        self
    }

    /// Creates a set or map if missing.
    pub fn add_set(&mut self, table: &str, set: &SetSpec) -> &mut Self {
        let mut flags = 0;
        if set.interval {
            flags |= NFT_SET_INTERVAL;
        }
        if set.data.is_some() {
            flags |= NFT_SET_MAP;
        }
        let mut a =
            Attrs::new().str(1, table).str(2, &set.name).be32(3, flags).be32(4, set.key_type).be32(5, set.key_len);
        match set.data {
            // A verdict map: the kernel knows the data's size.
            Some((datatype::VERDICT, _)) => a = a.be32(6, datatype::VERDICT),
            Some((ty, len)) => a = a.be32(6, ty).be32(7, len),
            None => {}
        }
        if set.key_type == datatype::IFNAME || set.key_type == datatype::INTEGER {
            // NFTA_SET_USERDATA, NFTNL_UDATA_SET_KEYBYTEORDER = host endian: only so that
            // `nft list` prints interface names and integers (the kernel ignores user data).
            let mut udata = vec![0u8, 4];
            udata.extend_from_slice(&1u32.to_ne_bytes());
            a = a.bytes(13, &udata);
        }
        // NFTA_SET_ID: the kernel insists on a batch-unique id for every new set.
        a = a.be32(10, self.next_set_id);
        self.next_set_id += 1;
        self.msgs.push((NFT_MSG_NEWSET, NLM_F_CREATE, a));
        self
    }

    /// Removes every element of a set.
    pub fn flush_set(&mut self, table: &str, set: &str) -> &mut Self {
        self.msgs.push((NFT_MSG_DELSETELEM, 0, Attrs::new().str(1, table).str(2, set)));
        self
    }

    pub fn add_elems(&mut self, table: &str, set: &str, elems: &[Elem]) -> &mut Self {
        self.elems(NFT_MSG_NEWSETELEM, NLM_F_CREATE, table, set, elems)
    }

    pub fn del_elems(&mut self, table: &str, set: &str, elems: &[Elem]) -> &mut Self {
        self.elems(NFT_MSG_DELSETELEM, 0, table, set, elems)
    }

    fn elems(&mut self, msg: u16, flags: u16, table: &str, set: &str, elems: &[Elem]) -> &mut Self {
        // Large element lists go in several messages to stay well under the socket buffer.
        for chunk in elems.chunks(512) {
            let mut list = Attrs::new();
            for e in chunk {
                let mut el = Attrs::new().nested(1, Attrs::new().bytes(1, &e.key));
                if let Some(d) = &e.data {
                    el = el.nested(2, Attrs::new().bytes(1, d));
                }
                if let Some(chain) = &e.goto {
                    // NFTA_DATA_VERDICT { NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN }
                    let v = Attrs::new().be32(1, NFT_GOTO as u32).str(2, chain);
                    el = el.nested(2, Attrs::new().nested(2, v));
                }
                if let Some(c) = e.comment.as_ref().filter(|_| msg == NFT_MSG_NEWSETELEM) {
                    el = el.bytes(NFTA_SET_ELEM_USERDATA, &elem_comment(c));
                }
                list = list.nested(1, el);
            }
            self.msgs.push((msg, flags, Attrs::new().str(1, table).str(2, set).nested(3, list)));
        }
        self
    }
}
