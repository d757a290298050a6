//! Voting-disk format v1: encode and decode of the header block and the slot blocks.
//!
//! Pure code, no I/O. Every field sits at an explicit little-endian offset inside a 4096-byte
//! block (see `fenced/docs/voting-disk-format.md`); nothing is transmuted and every read of a
//! field goes through a bounds-checked helper, so arbitrary disk contents can never panic.
//! The checksum is CRC-32/IEEE (the `crc32fast` polynomial 0x04C11DB7, reflected, init and
//! xor-out 0xFFFFFFFF) over bytes `0..4092`, stored at `4092..4096`.

use std::fmt;
use std::str::FromStr;

/// Size of every block of a voting disk, and the alignment of every O_DIRECT transfer.
pub const BLOCK_SIZE: usize = 4096;
/// The format version this code writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest number of node slots on one voting disk (slot numbers are one byte).
pub const MAX_SLOTS: usize = 255;
/// Magic at offset 0 of the header block (block 0).
pub const HEADER_MAGIC: [u8; 8] = *b"FNCDVOTE";
/// Magic at offset 0 of a slot block (block 1 + slot).
pub const SLOT_MAGIC: [u8; 8] = *b"FNCDSLOT";
/// Length of the zero-padded UTF-8 node name in a slot block.
pub const NODE_NAME_LEN: usize = 64;
/// Bytes of the dead-node bitmap: one bit per possible slot (256 bits).
pub const DEAD_BITMAP_LEN: usize = 32;

/// Offset of the CRC-32 that covers `0..CRC_OFFSET` of every block.
pub const CRC_OFFSET: usize = BLOCK_SIZE - 4;

// Header block field offsets.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_CLUSTER: usize = 16;
const H_SLOTS: usize = 32;
const H_BLOCK_SIZE: usize = 36;
const H_POLL_MS: usize = 40;
const H_IO_DEADLINE_MS: usize = 44;
const H_LEASE_MS: usize = 48;
const H_WATCHDOG_MS: usize = 52;

// Slot block field offsets.
const S_MAGIC: usize = 0;
const S_VERSION: usize = 8;
const S_CLUSTER: usize = 16;
const S_SLOT: usize = 32;
const S_STATE: usize = 33;
/// Self-fence cause, meaningful in a self-fenced slot only (a reserved zero before it existed).
const S_CAUSE: usize = 34;
const S_NAME: usize = 40;
const S_INCARNATION: usize = 104;
const S_HB_SEQ: usize = 112;
const S_HB_MONO_MS: usize = 120;
const S_EPOCH: usize = 128;
const S_GENERATION: usize = 136;
const S_DEAD: usize = 144;
const S_ISSUER: usize = 176;
/// The writer's kernel boot (`/proc/sys/kernel/random/boot_id`); zero from a fenced that
/// predates the field (reserved zeros before it existed).
const S_BOOT: usize = 184;
/// While the node waits to be let back in after a fence: the boot it was fenced in. Zero
/// otherwise, and from a fenced that predates the field.
const S_FENCED_BOOT: usize = 200;
/// Copy of the heartbeat sequence near the end of the block: a block whose CRC fails and whose
/// two copies differ was torn by a partial write rather than corrupted at rest.
const S_HB_SEQ_TAIL: usize = 4080;

/// One block as read from or written to a voting disk.
pub type Block = [u8; BLOCK_SIZE];

/// Why a block was not accepted. Each verdict is distinct so `fenced disk dump` and the logs
/// can say what is wrong with which block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// All 4096 bytes are zero: the block was never written (a free slot, an unformatted disk).
    #[error("never written (all zero)")]
    NeverWritten,
    /// The magic does not match: not a voting-disk block, or the wrong block kind.
    #[error("wrong magic: not a fenced voting-disk block")]
    BadMagic,
    /// Written by a newer fenced; this build must not interpret it.
    #[error(
        "format version {found} is newer than the supported version {supported}: upgrade fenced"
    )]
    NewerVersion {
        /// Version found on disk.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// Version 0 is never written by any fenced.
    #[error("format version 0 is invalid")]
    InvalidVersion,
    /// The CRC does not match and the block looks corrupted at rest.
    #[error("CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadCrc {
        /// CRC stored at offset 4092.
        stored: u32,
        /// CRC computed over bytes 0..4092.
        computed: u32,
    },
    /// The CRC does not match and the two copies of the heartbeat sequence differ: a torn write.
    #[error("torn block (CRC mismatch, heartbeat sequence copies differ)")]
    Torn,
    /// A valid block of another cluster.
    #[error("belongs to cluster {found}, not {expected}")]
    ForeignCluster {
        /// Cluster of this disk set.
        expected: ClusterId,
        /// Cluster written in the block.
        found: ClusterId,
    },
    /// A valid block whose slot field does not match its position on the disk.
    #[error("slot field says {found}, but the block is at slot {expected}")]
    WrongSlot {
        /// Slot implied by the block's position.
        expected: u8,
        /// Slot written in the block.
        found: u8,
    },
    /// A field has a value this version never writes.
    #[error("invalid {0}")]
    InvalidField(&'static str),
}

/// The 16-byte cluster UUID that ties voting disks and slot blocks to one cluster.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClusterId(pub [u8; 16]);

impl ClusterId {
    /// The nil UUID, refused by `format`.
    pub const NIL: ClusterId = ClusterId([0; 16]);

    /// Whether this is the nil UUID.
    pub fn is_nil(&self) -> bool {
        *self == Self::NIL
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

/// Error parsing a cluster UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cluster UUID {0:?}: expected 32 hex digits, optionally as 8-4-4-4-12 with dashes")]
pub struct ParseClusterIdError(pub String);

impl FromStr for ClusterId {
    type Err = ParseClusterIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseClusterIdError(s.to_owned());
        let hyphenated = s.len() == 36;
        if hyphenated {
            let dashes_ok = s
                .char_indices()
                .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
            if !dashes_ok {
                return Err(err());
            }
        } else if s.len() != 32 {
            return Err(err());
        }
        let mut digits = s.bytes().filter(|&c| c != b'-');
        let mut out = [0u8; 16];
        for byte in &mut out {
            let hi = digits.next().and_then(hex_value).ok_or_else(err)?;
            let lo = digits.next().and_then(hex_value).ok_or_else(err)?;
            *byte = (hi << 4) | lo;
        }
        if digits.next().is_some() {
            return Err(err());
        }
        Ok(ClusterId(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A kernel boot: the 128-bit `/proc/sys/kernel/random/boot_id`, new at every boot. Nil means
/// "not recorded".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BootId(pub [u8; 16]);

impl BootId {
    /// Not recorded.
    pub const NIL: BootId = BootId([0; 16]);

    /// Whether this is [`BootId::NIL`].
    pub fn is_nil(&self) -> bool {
        *self == Self::NIL
    }
}

impl fmt::Display for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&ClusterId(self.0), f)
    }
}

impl fmt::Debug for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootId({self})")
    }
}

impl FromStr for BootId {
    type Err = ParseClusterIdError;

    /// The kernel's text form (8-4-4-4-12 hex digits), surrounding white space ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse::<ClusterId>().map(|c| BootId(c.0))
    }
}

/// The timeouts the cluster was formatted with, in milliseconds (see DESIGN.md, timing model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// P: poll period.
    pub poll_ms: u32,
    /// D: deadline of one round's I/O (each read's linked timeout).
    pub io_deadline_ms: u32,
    /// L: lease; a node without a majority read younger than L stops feeding its watchdog.
    pub lease_ms: u32,
    /// W: hardware watchdog timeout.
    pub watchdog_ms: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            poll_ms: 1000,
            io_deadline_ms: 500,
            lease_ms: 3000,
            watchdog_ms: 5000,
        }
    }
}

impl Timeouts {
    /// Checks the relations of the timing model: D < P, L >= 2P + D, W >= 2P, all non-zero.
    pub fn check(&self) -> Result<(), &'static str> {
        let Timeouts {
            poll_ms: p,
            io_deadline_ms: d,
            lease_ms: l,
            watchdog_ms: w,
        } = *self;
        let (p64, d64, l64, w64) = (u64::from(p), u64::from(d), u64::from(l), u64::from(w));
        if p == 0 || d == 0 || l == 0 || w == 0 {
            Err("every timeout must be non-zero")
        } else if d64 >= p64 {
            Err("the I/O deadline must be shorter than the poll period (D < P)")
        } else if l64 < 2 * p64 + d64 {
            Err("the lease must cover one lost round (L >= 2P + D)")
        } else if w64 < 2 * p64 {
            Err("the watchdog timeout must be at least two poll periods (W >= 2P)")
        } else {
            Ok(())
        }
    }
}

/// Block 0 of a voting disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version (1).
    pub version: u32,
    /// Cluster this disk belongs to.
    pub cluster: ClusterId,
    /// Number of slot blocks following the header (1..=255).
    pub slots: u8,
    /// Block size (4096).
    pub block_size: u32,
    /// Timeouts the cluster was formatted with.
    pub timeouts: Timeouts,
}

impl Header {
    /// A v1 header for `cluster` with `slots` slots.
    pub fn new(cluster: ClusterId, slots: u8, timeouts: Timeouts) -> Self {
        Header {
            version: FORMAT_VERSION,
            cluster,
            slots,
            block_size: u32::from(BLOCK_SIZE_U16),
            timeouts,
        }
    }

    /// Bytes a disk needs to hold this header and all its slots.
    pub fn disk_bytes(&self) -> u64 {
        disk_bytes_for(self.slots)
    }
}

const BLOCK_SIZE_U16: u16 = 4096;

/// Bytes a disk needs to hold a header and `slots` slot blocks.
pub fn disk_bytes_for(slots: u8) -> u64 {
    (1 + u64::from(slots)) * BLOCK_SIZE as u64
}

/// Byte offset of the block of `slot` on a voting disk.
pub fn slot_offset(slot: u8) -> u64 {
    (1 + u64::from(slot)) * BLOCK_SIZE as u64
}

/// What a node is doing with its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// Released: no daemon uses this slot.
    Free,
    /// A daemon is starting up and has not joined yet.
    Joining,
    /// A member of the cluster.
    Joined,
    /// Shutting down cleanly.
    Leaving,
    /// The node fenced itself, for this reason.
    SelfFenced(SelfFenceCause),
}

/// Why a node fenced itself, as its self-fenced slot records it (slot byte 34).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelfFenceCause {
    /// Not recorded: written by a fenced that predates the field, or a code this build does
    /// not know.
    Unrecorded,
    /// The authority on the voting disks marked it dead.
    MarkedDead,
    /// Its reservation key was gone from a LUN.
    KeyGone,
    /// It lacked a read-majority of voting disks for longer than the lease.
    LeaseExpired,
    /// Another daemon incarnation wrote its slot.
    DuplicateSlot,
    /// Its loop ran late beyond its deadline.
    LoopLate,
}

impl SelfFenceCause {
    fn to_byte(self) -> u8 {
        match self {
            SelfFenceCause::Unrecorded => 0,
            SelfFenceCause::MarkedDead => 1,
            SelfFenceCause::KeyGone => 2,
            SelfFenceCause::LeaseExpired => 3,
            SelfFenceCause::DuplicateSlot => 4,
            SelfFenceCause::LoopLate => 5,
        }
    }

    fn from_byte(b: u8) -> Self {
        match b {
            1 => SelfFenceCause::MarkedDead,
            2 => SelfFenceCause::KeyGone,
            3 => SelfFenceCause::LeaseExpired,
            4 => SelfFenceCause::DuplicateSlot,
            5 => SelfFenceCause::LoopLate,
            _ => SelfFenceCause::Unrecorded,
        }
    }

    /// What the operator reads in `fenced status` and `fenced disk dump`.
    pub fn as_str(self) -> &'static str {
        match self {
            SelfFenceCause::Unrecorded => "not recorded",
            SelfFenceCause::MarkedDead => "marked dead by the voting-disk authority",
            SelfFenceCause::KeyGone => "its reservation key was gone from a LUN",
            SelfFenceCause::LeaseExpired => {
                "no read-majority of voting disks for longer than the lease"
            }
            SelfFenceCause::DuplicateSlot => "another daemon wrote its slot",
            SelfFenceCause::LoopLate => "its loop ran late beyond its deadline",
        }
    }
}

impl SlotState {
    fn to_byte(self) -> u8 {
        match self {
            SlotState::Free => 0,
            SlotState::Joining => 1,
            SlotState::Joined => 2,
            SlotState::Leaving => 3,
            SlotState::SelfFenced(_) => 4,
        }
    }

    /// The state from its byte, and for a self-fenced slot the cause byte.
    fn from_bytes(b: u8, cause: u8) -> Option<Self> {
        Some(match b {
            0 => SlotState::Free,
            1 => SlotState::Joining,
            2 => SlotState::Joined,
            3 => SlotState::Leaving,
            4 => SlotState::SelfFenced(SelfFenceCause::from_byte(cause)),
            _ => return None,
        })
    }

    /// Why the node fenced itself, for a self-fenced slot.
    pub fn self_fence_cause(self) -> Option<SelfFenceCause> {
        match self {
            SlotState::SelfFenced(c) => Some(c),
            _ => None,
        }
    }

    /// The cause byte written beside the state: 0 unless self-fenced.
    fn cause_byte(self) -> u8 {
        match self {
            SlotState::SelfFenced(c) => c.to_byte(),
            _ => 0,
        }
    }

    /// Lower-case name used by the CLI and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Free => "free",
            SlotState::Joining => "joining",
            SlotState::Joined => "joined",
            SlotState::Leaving => "leaving",
            SlotState::SelfFenced(_) => "self-fenced",
        }
    }
}

/// A node name: UTF-8, at most 64 bytes, no NUL; stored zero padded.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeName {
    bytes: [u8; NODE_NAME_LEN],
    len: u8,
}

impl NodeName {
    /// The name, or `None` if it is longer than 64 bytes or contains NUL.
    pub fn new(name: &str) -> Option<Self> {
        let raw = name.as_bytes();
        if raw.len() > NODE_NAME_LEN || raw.contains(&0) {
            return None;
        }
        let mut bytes = [0u8; NODE_NAME_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(NodeName {
            bytes,
            len: u8::try_from(raw.len()).ok()?,
        })
    }

    fn from_field(field: &[u8; NODE_NAME_LEN]) -> Option<Self> {
        let len = field.iter().position(|&b| b == 0).unwrap_or(NODE_NAME_LEN);
        if field[len..].iter().any(|&b| b != 0) {
            return None;
        }
        std::str::from_utf8(&field[..len]).ok()?;
        Some(NodeName {
            bytes: *field,
            len: u8::try_from(len).ok()?,
        })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // The constructors only accept valid UTF-8 of `len` bytes.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The set of slots a fence event declares dead: 256 bits, bit `s` is slot `s`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DeadSet(pub [u8; DEAD_BITMAP_LEN]);

impl DeadSet {
    /// Whether `slot` is dead.
    pub fn contains(&self, slot: u8) -> bool {
        self.0[usize::from(slot / 8)] & (1 << (slot % 8)) != 0
    }

    /// Marks `slot` dead.
    pub fn insert(&mut self, slot: u8) {
        self.0[usize::from(slot / 8)] |= 1 << (slot % 8);
    }

    /// Whether no slot is dead.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    /// The dead slots, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=u8::MAX).filter(move |&s| self.contains(s))
    }
}

impl fmt::Debug for DeadSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A fence event: the quorum marker a slot carries. Epoch 0 means "no marker".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Marker {
    /// Monotonic fence epoch.
    pub epoch: u64,
    /// Tie-break within an epoch.
    pub generation: u64,
    /// Slots declared dead.
    pub dead: DeadSet,
    /// Slot of the node that issued the event.
    pub issuer: u8,
}

impl Marker {
    /// Whether this slot carries a fence event at all.
    pub fn is_present(&self) -> bool {
        self.epoch != 0
    }

    /// The order key of markers: a higher (epoch, generation) supersedes a lower one.
    pub fn key(&self) -> (u64, u64) {
        (self.epoch, self.generation)
    }
}

/// The decoded contents of one slot block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotBlock {
    /// Cluster the block belongs to.
    pub cluster: ClusterId,
    /// Slot index (position of the block on disk minus one).
    pub slot: u8,
    /// What the owner is doing.
    pub state: SlotState,
    /// Owner's node name.
    pub node_name: NodeName,
    /// Random u64 chosen at each daemon start; two writers of one slot differ here.
    pub incarnation: u64,
    /// Heartbeat sequence, incremented on every write.
    pub heartbeat_seq: u64,
    /// The writer's CLOCK_MONOTONIC in ms at the write (informational: other nodes measure
    /// age on their own clock).
    pub heartbeat_mono_ms: u64,
    /// The fence event the owner issued or adopted (epoch 0 = none).
    pub marker: Marker,
    /// The kernel boot the writer ran in.
    pub boot: BootId,
    /// Set only while the node waits to be let back in after a fence: the boot it was fenced
    /// in (so a slot whose `boot` differs shows the node rebooted since).
    pub fenced_boot: BootId,
}

fn put_u32(b: &mut Block, at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Block, at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn array<const N: usize>(b: &Block, at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn get_u32(b: &Block, at: usize) -> u32 {
    u32::from_le_bytes(array(b, at))
}

fn get_u64(b: &Block, at: usize) -> u64 {
    u64::from_le_bytes(array(b, at))
}

/// CRC-32/IEEE of bytes `0..4092` of a block.
pub fn block_crc(b: &Block) -> u32 {
    crc32fast::hash(&b[..CRC_OFFSET])
}

fn seal(b: &mut Block) {
    let crc = block_crc(b);
    put_u32(b, CRC_OFFSET, crc);
}

/// Magic, version and CRC checks shared by both block kinds.
fn check_envelope(b: &Block, magic: &[u8; 8], is_slot: bool) -> Result<(), BlockError> {
    if b.iter().all(|&x| x == 0) {
        return Err(BlockError::NeverWritten);
    }
    if array::<8>(b, 0) != *magic {
        return Err(BlockError::BadMagic);
    }
    let version = get_u32(b, 8);
    if version > FORMAT_VERSION {
        return Err(BlockError::NewerVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(BlockError::InvalidVersion);
    }
    let stored = get_u32(b, CRC_OFFSET);
    let computed = block_crc(b);
    if stored != computed {
        if is_slot && get_u64(b, S_HB_SEQ) != get_u64(b, S_HB_SEQ_TAIL) {
            return Err(BlockError::Torn);
        }
        return Err(BlockError::BadCrc { stored, computed });
    }
    Ok(())
}

/// Encodes a header into a block (all other bytes zero).
pub fn encode_header(h: &Header, out: &mut Block) {
    out.fill(0);
    out[H_MAGIC..H_MAGIC + 8].copy_from_slice(&HEADER_MAGIC);
    put_u32(out, H_VERSION, h.version);
    out[H_CLUSTER..H_CLUSTER + 16].copy_from_slice(&h.cluster.0);
    out[H_SLOTS] = h.slots;
    put_u32(out, H_BLOCK_SIZE, h.block_size);
    put_u32(out, H_POLL_MS, h.timeouts.poll_ms);
    put_u32(out, H_IO_DEADLINE_MS, h.timeouts.io_deadline_ms);
    put_u32(out, H_LEASE_MS, h.timeouts.lease_ms);
    put_u32(out, H_WATCHDOG_MS, h.timeouts.watchdog_ms);
    seal(out);
}

/// Decodes block 0. Refuses newer versions, bad CRCs and impossible field values.
pub fn decode_header(b: &Block) -> Result<Header, BlockError> {
    check_envelope(b, &HEADER_MAGIC, false)?;
    let slots = b[H_SLOTS];
    if slots == 0 {
        return Err(BlockError::InvalidField("slot count (0)"));
    }
    let block_size = get_u32(b, H_BLOCK_SIZE);
    if block_size != u32::from(BLOCK_SIZE_U16) {
        return Err(BlockError::InvalidField(
            "block size (only 4096 is supported)",
        ));
    }
    Ok(Header {
        version: get_u32(b, H_VERSION),
        cluster: ClusterId(array(b, H_CLUSTER)),
        slots,
        block_size,
        timeouts: Timeouts {
            poll_ms: get_u32(b, H_POLL_MS),
            io_deadline_ms: get_u32(b, H_IO_DEADLINE_MS),
            lease_ms: get_u32(b, H_LEASE_MS),
            watchdog_ms: get_u32(b, H_WATCHDOG_MS),
        },
    })
}

/// Encodes a slot block (all other bytes zero).
pub fn encode_slot(s: &SlotBlock, out: &mut Block) {
    out.fill(0);
    out[S_MAGIC..S_MAGIC + 8].copy_from_slice(&SLOT_MAGIC);
    put_u32(out, S_VERSION, FORMAT_VERSION);
    out[S_CLUSTER..S_CLUSTER + 16].copy_from_slice(&s.cluster.0);
    out[S_SLOT] = s.slot;
    out[S_STATE] = s.state.to_byte();
    out[S_CAUSE] = s.state.cause_byte();
    out[S_NAME..S_NAME + NODE_NAME_LEN].copy_from_slice(&s.node_name.bytes);
    put_u64(out, S_INCARNATION, s.incarnation);
    put_u64(out, S_HB_SEQ, s.heartbeat_seq);
    put_u64(out, S_HB_MONO_MS, s.heartbeat_mono_ms);
    put_u64(out, S_EPOCH, s.marker.epoch);
    put_u64(out, S_GENERATION, s.marker.generation);
    out[S_DEAD..S_DEAD + DEAD_BITMAP_LEN].copy_from_slice(&s.marker.dead.0);
    out[S_ISSUER] = s.marker.issuer;
    out[S_BOOT..S_BOOT + 16].copy_from_slice(&s.boot.0);
    out[S_FENCED_BOOT..S_FENCED_BOOT + 16].copy_from_slice(&s.fenced_boot.0);
    put_u64(out, S_HB_SEQ_TAIL, s.heartbeat_seq);
    seal(out);
}

/// Decodes the block at position `slot` of a disk of `cluster`.
///
/// The checks run in a fixed order and the first failure is the verdict: never written, magic,
/// version, CRC (torn or corrupt), cluster, slot index, field values.
pub fn decode_slot(b: &Block, cluster: &ClusterId, slot: u8) -> Result<SlotBlock, BlockError> {
    let s = decode_slot_any(b)?;
    if s.cluster != *cluster {
        return Err(BlockError::ForeignCluster {
            expected: *cluster,
            found: s.cluster,
        });
    }
    if s.slot != slot {
        return Err(BlockError::WrongSlot {
            expected: slot,
            found: s.slot,
        });
    }
    Ok(s)
}

/// Decodes a slot block without checking which cluster or position it belongs to.
pub fn decode_slot_any(b: &Block) -> Result<SlotBlock, BlockError> {
    check_envelope(b, &SLOT_MAGIC, true)?;
    let state = SlotState::from_bytes(b[S_STATE], b[S_CAUSE])
        .ok_or(BlockError::InvalidField("slot state"))?;
    let node_name = NodeName::from_field(&array(b, S_NAME)).ok_or(BlockError::InvalidField(
        "node name (not zero-padded UTF-8)",
    ))?;
    if get_u64(b, S_HB_SEQ) != get_u64(b, S_HB_SEQ_TAIL) {
        return Err(BlockError::InvalidField("heartbeat sequence tail copy"));
    }
    Ok(SlotBlock {
        cluster: ClusterId(array(b, S_CLUSTER)),
        slot: b[S_SLOT],
        state,
        node_name,
        incarnation: get_u64(b, S_INCARNATION),
        heartbeat_seq: get_u64(b, S_HB_SEQ),
        heartbeat_mono_ms: get_u64(b, S_HB_MONO_MS),
        marker: Marker {
            epoch: get_u64(b, S_EPOCH),
            generation: get_u64(b, S_GENERATION),
            dead: DeadSet(array(b, S_DEAD)),
            issuer: b[S_ISSUER],
        },
        boot: BootId(array(b, S_BOOT)),
        fenced_boot: BootId(array(b, S_FENCED_BOOT)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterId {
        "0f3c2a9e-1b2d-4c5e-8f70-112233445566".parse().unwrap()
    }

    #[test]
    fn a_self_fenced_slot_keeps_its_cause_and_older_blocks_read_as_unrecorded() {
        let mut b = sample();
        b.state = SlotState::SelfFenced(SelfFenceCause::KeyGone);
        let mut raw = [0u8; BLOCK_SIZE];
        encode_slot(&b, &mut raw);
        assert_eq!((raw[S_STATE], raw[S_CAUSE]), (4, 2));
        assert_eq!(decode_slot_any(&raw).unwrap().state, b.state);
        // A v1 block written before the cause existed: byte 34 is a reserved zero.
        let mut old = raw;
        old[S_CAUSE] = 0;
        let crc = crc32fast::hash(&old[..CRC_OFFSET]);
        old[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_slot_any(&old).unwrap().state,
            SlotState::SelfFenced(SelfFenceCause::Unrecorded)
        );
        // Other states write the byte as zero.
        b.state = SlotState::Joined;
        encode_slot(&b, &mut raw);
        assert_eq!(raw[S_CAUSE], 0);
    }

    #[test]
    fn boots_sit_at_184_and_200_and_blocks_without_them_read_as_nil() {
        let mut b = sample();
        b.fenced_boot = "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap();
        let mut raw = [0u8; BLOCK_SIZE];
        encode_slot(&b, &mut raw);
        assert_eq!(&raw[184..200], &b.boot.0);
        assert_eq!(raw[200], 0x00);
        assert_eq!(raw[215], 0xff);
        assert_eq!(decode_slot_any(&raw).unwrap(), b);
        // A v1 block from a fenced that predates the fields: reserved zeros there.
        raw[184..216].fill(0);
        let crc = crc32fast::hash(&raw[..CRC_OFFSET]);
        raw[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        let old = decode_slot_any(&raw).unwrap();
        assert!(old.boot.is_nil() && old.fenced_boot.is_nil());
    }

    #[test]
    fn a_boot_id_parses_from_the_kernel_text_form() {
        let id: BootId = "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0\n".parse().unwrap();
        assert_eq!(id.to_string(), "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0");
        assert!(!id.is_nil());
        assert!("not-a-boot".parse::<BootId>().is_err());
    }

    fn sample() -> SlotBlock {
        let mut dead = DeadSet::default();
        dead.insert(3);
        dead.insert(254);
        SlotBlock {
            cluster: cluster(),
            slot: 7,
            state: SlotState::Joined,
            node_name: NodeName::new("node-7.example").unwrap(),
            incarnation: 0xdead_beef_0123_4567,
            heartbeat_seq: 42,
            heartbeat_mono_ms: 123_456,
            marker: Marker {
                epoch: 9,
                generation: 2,
                dead,
                issuer: 1,
            },
            boot: "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0".parse().unwrap(),
            fenced_boot: BootId::NIL,
        }
    }

    #[test]
    fn uuid_parse_and_display() {
        let c = cluster();
        assert_eq!(c.to_string(), "0f3c2a9e-1b2d-4c5e-8f70-112233445566");
        assert_eq!(
            "0F3C2A9E1B2D4C5E8F70112233445566".parse::<ClusterId>(),
            Ok(c)
        );
        for bad in [
            "",
            "0f3c2a9e-1b2d-4c5e-8f70-11223344556",
            "0f3c2a9e1b2d-4c5e-8f70-1122334455667",
            "g".repeat(32).as_str(),
        ] {
            assert!(bad.parse::<ClusterId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_block_is_never_written() {
        let b = [0u8; BLOCK_SIZE];
        assert_eq!(
            decode_slot(&b, &cluster(), 0),
            Err(BlockError::NeverWritten)
        );
        assert_eq!(decode_header(&b), Err(BlockError::NeverWritten));
    }

    #[test]
    fn slot_round_trip_and_offsets() {
        let s = sample();
        let mut b = [0u8; BLOCK_SIZE];
        encode_slot(&s, &mut b);
        assert_eq!(&b[0..8], b"FNCDSLOT");
        assert_eq!(b[32], 7);
        assert_eq!(&b[112..120], &42u64.to_le_bytes());
        assert_eq!(&b[4080..4088], &42u64.to_le_bytes());
        assert_eq!(decode_slot(&b, &cluster(), 7), Ok(s));
    }

    #[test]
    fn distinct_verdicts() {
        let s = sample();
        let mut b = [0u8; BLOCK_SIZE];
        encode_slot(&s, &mut b);
        assert!(matches!(
            decode_slot(&b, &cluster(), 8),
            Err(BlockError::WrongSlot {
                expected: 8,
                found: 7
            })
        ));
        assert!(matches!(
            decode_slot(&b, &ClusterId([1; 16]), 7),
            Err(BlockError::ForeignCluster { .. })
        ));
        let mut torn = b;
        torn[S_HB_SEQ_TAIL] ^= 1;
        assert_eq!(decode_slot(&torn, &cluster(), 7), Err(BlockError::Torn));
        let mut corrupt = b;
        corrupt[2000] ^= 0x10;
        assert!(matches!(
            decode_slot(&corrupt, &cluster(), 7),
            Err(BlockError::BadCrc { .. })
        ));
        let mut newer = b;
        put_u32(&mut newer, S_VERSION, 2);
        seal(&mut newer);
        assert_eq!(
            decode_slot(&newer, &cluster(), 7),
            Err(BlockError::NewerVersion {
                found: 2,
                supported: 1
            })
        );
        let mut header = [0u8; BLOCK_SIZE];
        encode_header(&Header::new(cluster(), 3, Timeouts::default()), &mut header);
        assert_eq!(
            decode_slot(&header, &cluster(), 7),
            Err(BlockError::BadMagic)
        );
        assert_eq!(decode_header(&b), Err(BlockError::BadMagic));
    }

    #[test]
    fn header_round_trip() {
        let h = Header::new(cluster(), 255, Timeouts::default());
        let mut b = [0u8; BLOCK_SIZE];
        encode_header(&h, &mut b);
        assert_eq!(decode_header(&b), Ok(h));
        assert_eq!(h.disk_bytes(), 256 * 4096);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut b = [0u8; BLOCK_SIZE];
        encode_slot(&sample(), &mut b);
        for bit in 0..BLOCK_SIZE * 8 {
            let mut f = b;
            f[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_slot(&f, &cluster(), 7).is_err(),
                "flip of bit {bit} undetected"
            );
        }
        let mut h = [0u8; BLOCK_SIZE];
        encode_header(&Header::new(cluster(), 3, Timeouts::default()), &mut h);
        for bit in 0..BLOCK_SIZE * 8 {
            let mut f = h;
            f[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_header(&f).is_err(),
                "header flip of bit {bit} undetected"
            );
        }
    }

    fn slot_strategy() -> impl proptest::strategy::Strategy<Value = SlotBlock> {
        use proptest::prelude::*;
        let state = prop_oneof![
            Just(SlotState::Free),
            Just(SlotState::Joining),
            Just(SlotState::Joined),
            Just(SlotState::Leaving),
            Just(SlotState::SelfFenced(SelfFenceCause::Unrecorded)),
            Just(SlotState::SelfFenced(SelfFenceCause::MarkedDead)),
            Just(SlotState::SelfFenced(SelfFenceCause::KeyGone)),
            Just(SlotState::SelfFenced(SelfFenceCause::LeaseExpired)),
            Just(SlotState::SelfFenced(SelfFenceCause::DuplicateSlot)),
            Just(SlotState::SelfFenced(SelfFenceCause::LoopLate)),
        ];
        (
            any::<[u8; 16]>(),
            any::<u8>(),
            state,
            "[a-zA-Z0-9.\\-é]{0,21}",
            any::<[u64; 5]>(),
            any::<[u8; DEAD_BITMAP_LEN]>(),
            any::<u8>(),
            any::<[[u8; 16]; 2]>(),
        )
            .prop_map(|(c, slot, state, name, n, dead, issuer, boots)| SlotBlock {
                cluster: ClusterId(c),
                slot,
                state,
                node_name: NodeName::new(&name).unwrap(),
                incarnation: n[0],
                heartbeat_seq: n[1],
                heartbeat_mono_ms: n[2],
                marker: Marker {
                    epoch: n[3],
                    generation: n[4],
                    dead: DeadSet(dead),
                    issuer,
                },
                boot: BootId(boots[0]),
                fenced_boot: BootId(boots[1]),
            })
    }

    proptest::proptest! {
        #[test]
        fn slot_encode_decode_round_trip(s in slot_strategy()) {
            let mut b = [0u8; BLOCK_SIZE];
            encode_slot(&s, &mut b);
            proptest::prop_assert_eq!(decode_slot(&b, &s.cluster, s.slot), Ok(s));
        }

        #[test]
        fn header_encode_decode_round_trip(c in proptest::prelude::any::<[u8; 16]>(), slots in 1u8..=255, t in proptest::prelude::any::<[u32; 4]>()) {
            let h = Header::new(ClusterId(c), slots, Timeouts { poll_ms: t[0], io_deadline_ms: t[1], lease_ms: t[2], watchdog_ms: t[3] });
            let mut b = [0u8; BLOCK_SIZE];
            encode_header(&h, &mut b);
            proptest::prop_assert_eq!(decode_header(&b), Ok(h));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), BLOCK_SIZE)) {
            let mut b = [0u8; BLOCK_SIZE];
            b.copy_from_slice(&bytes);
            let _ = decode_header(&b);
            let _ = decode_slot(&b, &ClusterId::NIL, 0);
        }
    }

    #[test]
    fn timeouts_relations() {
        assert!(Timeouts::default().check().is_ok());
        let bad = Timeouts {
            io_deadline_ms: 1000,
            ..Timeouts::default()
        };
        assert!(bad.check().is_err());
    }
}
