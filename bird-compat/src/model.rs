//! The neutral rows the renderers print: what a BIRD socket shows, in routed's terms but
//! without routed's types. The agent fills a [`Snapshot`] per command; renderers read it.

use std::net::{IpAddr, Ipv4Addr};

/// A point in time, unix milliseconds (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs.saturating_mul(1000))
    }
}

/// Everything one command may show, taken at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub status: Status,
    /// In display order (BIRD shows protocols in configuration order).
    pub protocols: Vec<Protocol>,
    /// Routes of the (single, IPv4) table, in display order.
    pub routes: Vec<Route>,
    /// BFD sessions, grouped by their BFD protocol name (`bfd1`).
    pub bfd: Vec<BfdSession>,
}

/// `show status`.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub router_id: Option<Ipv4Addr>,
    /// Shown by the BIRD 2 dialect only.
    pub hostname: String,
    pub now: Timestamp,
    pub started: Timestamp,
    pub reconfigured: Timestamp,
    /// Graceful-restart recovery in progress (`0024`; calico-node is then not ready).
    pub graceful_restart_recovery: bool,
}

/// A protocol's coarse state, the `state` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoState {
    Up,
    Start,
    Down,
}

impl ProtoState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtoState::Up => "up",
            ProtoState::Start => "start",
            ProtoState::Down => "down",
        }
    }
}

/// One row of `show protocols` (and its `all` details).
#[derive(Debug, Clone)]
pub struct Protocol {
    /// Calico's names: `Mesh_10_0_0_2`, `Node_10_0_0_9`, `Global_10_0_0_254`, `kernel1`...
    pub name: String,
    pub kind: ProtoKind,
    pub state: ProtoState,
    pub since: Timestamp,
    pub preference: u32,
    /// `ACCEPT`, `REJECT` or a filter name.
    pub input_filter: String,
    pub output_filter: String,
    pub routes: RouteCounts,
    pub stats: ChangeStats,
}

/// What kind of protocol a row is, with the BGP details.
#[derive(Debug, Clone)]
pub enum ProtoKind {
    Device,
    Kernel,
    Static,
    Bfd,
    Bgp(Box<BgpInfo>),
}

impl ProtoKind {
    /// The `proto` column.
    pub fn label(&self) -> &'static str {
        match self {
            ProtoKind::Device => "Device",
            ProtoKind::Kernel => "Kernel",
            ProtoKind::Static => "Static",
            ProtoKind::Bfd => "BFD",
            ProtoKind::Bgp(_) => "BGP",
        }
    }
}

/// `Routes: N imported, N exported, N preferred`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteCounts {
    pub imported: u64,
    pub exported: u64,
    pub preferred: u64,
}

/// The route change statistics table (received, rejected, filtered, ignored, accepted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeStats {
    pub import_updates: [u64; 5],
    /// received, rejected, ignored, accepted (filtered is `---`).
    pub import_withdraws: [u64; 4],
    /// received, rejected, filtered, accepted (ignored is `---`).
    pub export_updates: [u64; 4],
    /// received, accepted.
    pub export_withdraws: [u64; 2],
}

/// BGP FSM states as BIRD names them in the info column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BgpState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl BgpState {
    pub fn as_str(self) -> &'static str {
        match self {
            BgpState::Idle => "Idle",
            BgpState::Connect => "Connect",
            BgpState::Active => "Active",
            BgpState::OpenSent => "OpenSent",
            BgpState::OpenConfirm => "OpenConfirm",
            BgpState::Established => "Established",
        }
    }
}

/// Capabilities, as far as `show protocols all` lists them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub ipv4_unicast: bool,
    pub route_refresh: bool,
    pub graceful_restart: bool,
    pub as4: bool,
    pub enhanced_refresh: bool,
    pub long_lived_graceful_restart: bool,
}

/// A running timer: seconds (with milliseconds) left of its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub remaining_ms: u64,
    pub period_s: u64,
}

/// The BGP block of `show protocols all NAME`.
#[derive(Debug, Clone)]
pub struct BgpInfo {
    pub state: BgpState,
    /// `Socket: Connection refused`, `Received: Hold timer expired`... (shown after the state).
    pub last_error: Option<String>,
    pub neighbor_address: IpAddr,
    pub neighbor_as: u32,
    pub local_as: u32,
    /// The rest is shown once Established.
    pub neighbor_id: Option<Ipv4Addr>,
    pub local_caps: Capabilities,
    pub neighbor_caps: Capabilities,
    /// iBGP.
    pub internal: bool,
    pub multihop: bool,
    pub source_address: Option<IpAddr>,
    pub hold_timer: Option<Timer>,
    pub keepalive_timer: Option<Timer>,
    /// Shown while not Established (`Connect delay:`).
    pub connect_delay: Option<Timer>,
    /// The next hop we announce (BIRD 2's `BGP Next hop:`).
    pub next_hop: Option<IpAddr>,
}

/// Where a route goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDest {
    Blackhole,
    Unreachable,
    Via { gateway: IpAddr, interface: String },
}

/// BGP path attributes (`show route all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpAttrs {
    /// 0 IGP, 1 EGP, 2 incomplete.
    pub origin: u8,
    pub as_path: Vec<u32>,
    pub next_hop: IpAddr,
    /// Only iBGP routes carry it.
    pub local_pref: Option<u32>,
}

/// One route of `show route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: IpAddr,
    pub prefix_len: u8,
    pub dest: RouteDest,
    /// The protocol it came from (`static1`, `Mesh_10_0_0_2`).
    pub protocol: String,
    pub since: Timestamp,
    /// The peer it was learned from, shown when it differs from the gateway.
    pub from: Option<IpAddr>,
    /// The best route of its network (`*`).
    pub primary: bool,
    pub preference: u32,
    /// Learned from BGP: the attributes.
    pub bgp: Option<BgpAttrs>,
}

/// One BFD session (`show bfd sessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdSession {
    /// The BFD protocol it belongs to (`bfd1`).
    pub protocol: String,
    pub address: IpAddr,
    /// `None` for multihop sessions (`---`).
    pub interface: Option<String>,
    /// `Up`, `Down`, `Init`, `AdminDown`.
    pub state: String,
    pub since: Timestamp,
    pub interval_ms: u64,
    pub timeout_ms: u64,
}
