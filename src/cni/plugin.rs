//! The CNI commands. `run` takes the environment and stdin and returns what to print on stdout,
//! or a [`CniError`] (printed as JSON on stdout, exit status 1, as libcni expects).

use super::spec::{
    code, parse_config, AddResult, CniEnv, CniError, NetConf, ResultInterface, ResultIp,
    ResultRoute, LATEST_VERSION, SUPPORTED_VERSIONS,
};
use crate::api::client::{Client, ClientError};
use crate::api::v1::{
    AllocateRequest, AllocateResponse, ErrorKind, GcRequest, GcResponse, NodeInfo, ReleaseRequest,
    ReleaseResponse,
};
use crate::netlink::{
    sysctl, KernelNetlink, LinkInfo, MacAddr, Netlink, NetlinkError, NetnsRef, Route,
    RouteProtocol, POD_GATEWAY_V4,
};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Test hook (`crate::stop_point`): `ROUTED_CNI_STOP_AT=allocated` stops ADD once the agent
/// has answered with the address (nothing carries it yet); `=wired` once everything is wired,
/// before the result is printed.
pub const STOP_VAR: &str = "ROUTED_CNI_STOP_AT";

/// Every handle routed-cni creates starts with this (`routed.<container id>.<ifname>`).
pub const HANDLE_PREFIX: &str = "routed.";

/// The IPAM handle of one attachment: container id + interface, so two interfaces differ.
pub fn handle_of(container_id: &str, ifname: &str) -> String {
    format!("{HANDLE_PREFIX}{container_id}.{ifname}")
}

/// `rd` + 11 hex digits of sha1("<namespace>.<pod>") (or of the container id when no pod is
/// named); an interface other than eth0 is part of the hashed text, so a second interface of the
/// same pod gets its own veth.
pub fn host_veth_name(env: &CniEnv, container_id: &str, ifname: &str) -> String {
    let mut text = match env.pod() {
        Some((ns, pod)) => format!("{ns}.{pod}"),
        None => container_id.to_string(),
    };
    if ifname != "eth0" {
        text = format!("{text}.{ifname}");
    }
    let digest = sha1_smol::Sha1::from(text.as_bytes()).digest().to_string();
    format!("rd{}", &digest[..11])
}

/// Runs one CNI invocation.
pub fn run(vars: &HashMap<String, String>, stdin: &[u8]) -> Result<String, CniError> {
    let env = CniEnv::from_vars(vars)?;
    let command = env.require("CNI_COMMAND", &env.command)?.to_string();
    if command == "VERSION" {
        return Ok(version(stdin));
    }
    if !matches!(command.as_str(), "ADD" | "DEL" | "CHECK" | "GC" | "STATUS") {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("unknown CNI_COMMAND {command:?}"),
            "expected ADD, DEL, CHECK, GC, STATUS or VERSION",
        ));
    }
    let conf = parse_config(stdin)?;
    let client = Client::new(
        conf.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::api::DEFAULT_SOCKET)),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(
                code::IO_FAILURE,
                "cannot start the plugin runtime",
                e.to_string(),
            )
        })?;
    let version = conf.cni_version.clone();
    let result = runtime.block_on(async {
        match command.as_str() {
            "ADD" => add(&env, &conf, &client).await,
            "DEL" => del(&env, &client).await.map(|()| String::new()),
            "CHECK" => check(&env, &conf).await.map(|()| String::new()),
            "GC" => gc(&conf, &client).await.map(|()| String::new()),
            _ => status(&client).map(|()| String::new()),
        }
    });
    result.map_err(|mut e| {
        e.cni_version = version;
        e
    })
}

fn version(stdin: &[u8]) -> String {
    let asked = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST_VERSION.to_string());
    serde_json::json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}

fn agent_error(e: ClientError, what: &str) -> CniError {
    match &e {
        ClientError::Unreachable { .. } => CniError::new(
            code::TRY_AGAIN_LATER,
            format!("{what}: the routed agent is not reachable"),
            e.to_string(),
        ),
        // The agent's message names the datastore ("datastore etcd://h:p unavailable: ...").
        ClientError::Api {
            kind: ErrorKind::Unavailable,
            error,
            ..
        } => CniError::new(
            code::TRY_AGAIN_LATER,
            format!("{what}: {error}"),
            "the datastore is unreachable; existing pods keep their traffic, retry later",
        ),
        ClientError::Api {
            kind: ErrorKind::Exhausted,
            error,
            ..
        } => CniError::new(
            code::NO_ADDRESS,
            format!("{what}: no address available"),
            error.clone(),
        ),
        _ => CniError::new(
            code::NETWORK_SETUP_FAILED,
            format!("{what} failed"),
            e.to_string(),
        ),
    }
}

fn netlink_error(step: &str, e: NetlinkError) -> CniError {
    match e {
        NetlinkError::NetnsNotFound(path) => CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_NETNS {} does not exist", path.display()),
            step.to_string(),
        ),
        e @ NetlinkError::NetnsEnter { .. } => CniError::new(
            code::INVALID_ENVIRONMENT,
            "cannot enter CNI_NETNS",
            format!("{step}: {e}"),
        ),
        e => CniError::new(
            code::NETWORK_SETUP_FAILED,
            format!("{step} failed"),
            e.to_string(),
        ),
    }
}

struct Attachment<'a> {
    container_id: &'a str,
    ifname: &'a str,
    netns: &'a Path,
    veth: String,
    handle: String,
}

fn attachment<'a>(env: &'a CniEnv, need_netns: bool) -> Result<Attachment<'a>, CniError> {
    let container_id = env.require("CNI_CONTAINERID", &env.container_id)?;
    let ifname = env.require("CNI_IFNAME", &env.ifname)?;
    if ifname.len() > 15 || ifname.contains('/') || ifname.contains(char::is_whitespace) {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_IFNAME {ifname:?} is not a valid interface name"),
            "",
        ));
    }
    let netns = match (&env.netns, need_netns) {
        (Some(n), _) => n.as_path(),
        (None, true) => {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                "CNI_NETNS is required",
                "set by the container runtime",
            ))
        }
        (None, false) => Path::new(""),
    };
    Ok(Attachment {
        container_id,
        ifname,
        netns,
        veth: host_veth_name(env, container_id, ifname),
        handle: handle_of(container_id, ifname),
    })
}

/// ADD: make sure nothing is in the way, allocate the address while the interfaces are built,
/// put the address on and report. A failure once the allocation has started rolls back both.
async fn add(env: &CniEnv, conf: &NetConf, client: &Client) -> Result<String, CniError> {
    let att = attachment(env, true)?;
    require_netns(&att)?;
    let host = KernelNetlink::new()
        .await
        .map_err(|e| netlink_error("opening netlink", e))?;
    if link_exists(&host, &att.veth, "looking up the host veth").await? {
        return Err(host_veth_exists(&att));
    }
    let netns = NetnsRef::new(att.netns);
    let pod = host
        .for_netns(&netns)
        .await
        .map_err(|e| netlink_error("entering CNI_NETNS", e))?;
    if link_exists(pod.as_ref(), att.ifname, "looking up CNI_IFNAME").await? {
        return Err(pod_interface_exists(&att));
    }

    // The allocation (a datastore write) runs while the interfaces are built: neither needs the
    // other until the address goes on. The MTU comes from the agent's node info (no datastore).
    let allocation = start_allocation(client, allocate_request(env, conf, &att));
    let wired = match pod_mtu(conf, client) {
        Ok(mtu) => wire_links(&host, pod.as_ref(), &att, &netns, mtu)
            .await
            .map(|w| (w, mtu)),
        Err(e) => Err(e),
    };
    let allocation = allocation.join();
    if allocation.address.is_ok() {
        crate::stop_point::reached(STOP_VAR, "allocated");
    }
    let result = match (wired, allocation.address) {
        (Ok((wired, mtu)), Ok(address)) => wire_address(&host, pod.as_ref(), &wired, address)
            .await
            .map(|()| render_add(&conf.cni_version, &wired, &att, address, mtu)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    if result.is_ok() {
        crate::stop_point::reached(STOP_VAR, "wired");
    }
    if result.is_err() {
        roll_back_add(&host, client, &att, allocation.refused).await;
    }
    result
}

/// CNI_NETNS must exist before anything is created.
fn require_netns(att: &Attachment<'_>) -> Result<(), CniError> {
    if att.netns.exists() {
        return Ok(());
    }
    Err(CniError::new(
        code::INVALID_ENVIRONMENT,
        format!("CNI_NETNS {} does not exist", att.netns.display()),
        "the container's network namespace is gone or was never created",
    ))
}

/// Whether `name` is a link in `netlink`'s namespace; `step` names the lookup in an error.
async fn link_exists(netlink: &dyn Netlink, name: &str, step: &str) -> Result<bool, CniError> {
    let found = netlink
        .link_by_name(name)
        .await
        .map_err(|e| netlink_error(step, e))?;
    Ok(found.is_some())
}

/// The host veth exists already: the attachment was made before (ADD called twice?).
fn host_veth_exists(att: &Attachment<'_>) -> CniError {
    CniError::new(
        code::INTERFACE_EXISTS,
        format!("host interface {} already exists", att.veth),
        format!(
            "container {} already has interface {} (ADD called twice?)",
            att.container_id, att.ifname
        ),
    )
}

/// CNI_IFNAME exists already in the pod's namespace.
fn pod_interface_exists(att: &Attachment<'_>) -> CniError {
    let name = att.ifname;
    let netns = att.netns.display();
    CniError::new(
        code::INTERFACE_EXISTS,
        format!("interface {name} already exists in {netns}"),
        "choose another CNI_IFNAME or delete the interface",
    )
}

/// One IPv4 address for the attachment's handle, labelled with the network, container,
/// interface, veth and (when named) the pod.
fn allocate_request(env: &CniEnv, conf: &NetConf, att: &Attachment<'_>) -> AllocateRequest {
    let mut attributes = BTreeMap::new();
    attributes.insert("network".to_string(), conf.name.clone());
    attributes.insert("container_id".to_string(), att.container_id.to_string());
    attributes.insert("ifname".to_string(), att.ifname.to_string());
    attributes.insert("veth".to_string(), att.veth.clone());
    if let Some((ns, name)) = env.pod() {
        attributes.insert("namespace".to_string(), ns.to_string());
        attributes.insert("pod".to_string(), name.to_string());
    }
    AllocateRequest {
        handle: att.handle.clone(),
        count: 1,
        ipv6: false,
        attributes,
    }
}

/// An allocation running on its own thread.
struct PendingAllocation {
    thread: std::thread::JoinHandle<Result<AllocateResponse, ClientError>>,
}

/// What the allocation came to.
struct AllocationOutcome {
    address: Result<IpAddr, CniError>,
    /// The agent refused the allocation: it allocates all or nothing and releases an
    /// allocation that completes after it answered, so there is nothing to give back then (and
    /// with the datastore unreachable, a release would only make the failing ADD slower).
    refused: bool,
}

/// Posts the allocation on a thread of its own, so the interfaces are built meanwhile.
fn start_allocation(client: &Client, request: AllocateRequest) -> PendingAllocation {
    let client = client.clone();
    PendingAllocation {
        thread: std::thread::spawn(move || {
            client.post::<_, AllocateResponse>("/v1/ipam/allocate", &request)
        }),
    }
}

impl PendingAllocation {
    /// Waits for the agent's answer: the first address it allocated.
    fn join(self) -> AllocationOutcome {
        let answer = match self.thread.join() {
            Ok(answer) => answer,
            Err(_) => {
                return AllocationOutcome {
                    address: Err(CniError::new(
                        code::NETWORK_SETUP_FAILED,
                        "address allocation thread failed",
                        "",
                    )),
                    refused: false,
                }
            }
        };
        let refused =
            matches!(&answer, Err(ClientError::Api { kind, .. }) if *kind != ErrorKind::Internal);
        let address = answer
            .map_err(|e| agent_error(e, "address allocation"))
            .and_then(|allocated| {
                allocated.addresses.first().map(|a| a.ip).ok_or_else(|| {
                    CniError::new(code::NO_ADDRESS, "the agent returned no address", "")
                })
            });
        AllocationOutcome { address, refused }
    }
}

/// The pod MTU: from the network config, else from the agent's node info.
fn pod_mtu(conf: &NetConf, client: &Client) -> Result<u32, CniError> {
    match conf.mtu {
        Some(mtu) => Ok(mtu),
        None => client
            .get::<NodeInfo>("/v1/node")
            .map(|n| n.pod_mtu)
            .map_err(|e| agent_error(e, "reading the node's MTU")),
    }
}

/// Rolls back a failed ADD: the veth (its peer and the host route go with it), then the
/// address unless the agent refused it (releasing a handle that got nothing is a no-op).
/// Failures are printed, not returned: the ADD's own error is the one the runtime sees.
async fn roll_back_add(
    host: &KernelNetlink,
    client: &Client,
    att: &Attachment<'_>,
    allocation_refused: bool,
) {
    if let Err(del) = host.delete_link(&att.veth).await {
        eprintln!("routed-cni: rollback: deleting {}: {del}", att.veth);
    }
    let release = ReleaseRequest {
        handle: att.handle.clone(),
    };
    if !allocation_refused {
        if let Err(rel) = client.post::<_, ReleaseResponse>("/v1/ipam/release", &release) {
            eprintln!("routed-cni: rollback: releasing {}: {rel}", att.handle);
        }
    }
}

struct Wired {
    host_index: u32,
    pod_index: u32,
    pod_mac: Option<MacAddr>,
}

/// The sysctls a pod's host veth carries, with their values: proxy ARP answering at once, and
/// forwarding.
fn host_veth_sysctls(veth: &str) -> [(String, &'static str); 3] {
    [
        (sysctl::proxy_arp_key(veth), "1"),
        (sysctl::proxy_delay_key(veth), "0"),
        (sysctl::ipv4_forwarding_key(veth), "1"),
    ]
}

/// The veth pair, host sysctls, both ends up, the pod's gateway and default routes.
async fn wire_links(
    host: &KernelNetlink,
    pod: &dyn Netlink,
    att: &Attachment<'_>,
    netns: &NetnsRef,
    mtu: u32,
) -> Result<Wired, CniError> {
    let host_link = host
        .create_veth(&att.veth, att.ifname, netns, MacAddr::HOST_VETH, mtu)
        .await
        .map_err(|e| match e {
            NetlinkError::AlreadyExists { .. } => CniError::new(
                code::INTERFACE_EXISTS,
                format!("{} or {} already exists", att.veth, att.ifname),
                e.to_string(),
            ),
            e => netlink_error("creating the veth pair", e),
        })?;
    for (key, value) in host_veth_sysctls(&att.veth) {
        host.set_sysctl(&key, value)
            .await
            .map_err(|e| netlink_error(&format!("setting {key}"), e))?;
    }
    host.set_link_up(host_link.index)
        .await
        .map_err(|e| netlink_error("setting the host veth up", e))?;
    let pod_link = pod
        .link_by_name(att.ifname)
        .await
        .map_err(|e| netlink_error("finding the pod interface", e))?
        .ok_or_else(|| {
            CniError::new(
                code::NETWORK_SETUP_FAILED,
                "the pod interface vanished after creation",
                "",
            )
        })?;
    pod.set_link_up(pod_link.index)
        .await
        .map_err(|e| netlink_error("setting the pod interface up", e))?;
    let gateway = IpAddr::V4(POD_GATEWAY_V4);
    let gateway_net = IpNetwork::new(gateway, 32)
        .map_err(|e| CniError::new(code::NETWORK_SETUP_FAILED, "gateway", e.to_string()))?;
    let default_net = IpNetwork::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0)
        .map_err(|e| CniError::new(code::NETWORK_SETUP_FAILED, "default route", e.to_string()))?;
    pod.add_route(&Route::link_scope(
        gateway_net,
        pod_link.index,
        RouteProtocol::BOOT,
    ))
    .await
    .map_err(|e| netlink_error("adding the pod's gateway route", e))?;
    pod.add_route(&Route::via(
        default_net,
        gateway,
        Some(pod_link.index),
        RouteProtocol::BOOT,
    ))
    .await
    .map_err(|e| netlink_error("adding the pod's default route", e))?;
    Ok(Wired {
        host_index: host_link.index,
        pod_index: pod_link.index,
        pod_mac: pod_link.mac,
    })
}

/// The pod's /32 and the host route to it.
async fn wire_address(
    host: &KernelNetlink,
    pod: &dyn Netlink,
    wired: &Wired,
    address: IpAddr,
) -> Result<(), CniError> {
    let host_prefix =
        IpNetwork::new(address, if address.is_ipv4() { 32 } else { 128 }).map_err(|e| {
            CniError::new(
                code::NETWORK_SETUP_FAILED,
                "bad address from the agent",
                e.to_string(),
            )
        })?;
    pod.add_address(wired.pod_index, host_prefix)
        .await
        .map_err(|e| netlink_error("adding the pod address", e))?;
    host.replace_route(&Route::link_scope(
        host_prefix,
        wired.host_index,
        RouteProtocol::WORKLOAD,
    ))
    .await
    .map_err(|e| netlink_error("adding the host route to the pod", e))?;
    Ok(())
}

fn render_add(
    version: &str,
    wired: &Wired,
    att: &Attachment<'_>,
    address: IpAddr,
    mtu: u32,
) -> String {
    let result = AddResult {
        cni_version: version.to_string(),
        interfaces: vec![
            ResultInterface {
                name: att.veth.clone(),
                mac: MacAddr::HOST_VETH.to_string(),
                mtu: None,
                sandbox: None,
            },
            ResultInterface {
                name: att.ifname.to_string(),
                mac: wired.pod_mac.map(|m| m.to_string()).unwrap_or_default(),
                mtu: (version != "0.4.0").then_some(mtu),
                sandbox: Some(att.netns.display().to_string()),
            },
        ],
        ips: vec![ResultIp {
            version: (version == "0.4.0").then(|| "4".to_string()),
            address: format!("{address}/32"),
            gateway: POD_GATEWAY_V4.to_string(),
            interface: 1,
        }],
        routes: vec![ResultRoute {
            dst: "0.0.0.0/0".into(),
            gw: None,
        }],
        dns: serde_json::Map::new(),
    };
    serde_json::to_string(&result).unwrap_or_default()
}

/// Interfaces first, then the address: the address is free for another pod only once nothing
/// routes to this one any more, and with the datastore unreachable the pod's interfaces still go
/// (the release fails with code 11 and the runtime's retry of DEL finishes it).
async fn del(env: &CniEnv, client: &Client) -> Result<(), CniError> {
    let att = attachment(env, false)?;
    let host = KernelNetlink::new()
        .await
        .map_err(|e| netlink_error("opening netlink", e))?;
    host.delete_link(&att.veth)
        .await
        .map_err(|e| netlink_error("deleting the host veth", e))?;
    let release = ReleaseRequest {
        handle: att.handle.clone(),
    };
    client
        .post::<_, ReleaseResponse>("/v1/ipam/release", &release)
        .map_err(|e| agent_error(e, "address release"))?;
    Ok(())
}

/// CHECK: the host veth (MAC, sysctls, the route to the pod) and the pod's interface (address,
/// gateway and default routes) are as ADD left them.
async fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let att = attachment(env, true)?;
    let address = previous_address(conf)?;
    let host = KernelNetlink::new()
        .await
        .map_err(|e| netlink_error("opening netlink", e))?;
    let host_link = check_host_veth(&host, &att).await?;
    let host_prefix = IpNetwork::new(address, 32).map_err(|e| check_failed(e.to_string()))?;
    check_host_route(&host, &att, host_prefix, host_link.index).await?;
    let pod = host
        .for_netns(&NetnsRef::new(att.netns))
        .await
        .map_err(|e| netlink_error("entering CNI_NETNS", e))?;
    check_pod_address(pod.as_ref(), &att, host_prefix).await?;
    check_pod_routes(pod.as_ref()).await
}

/// A CHECK finding: the attachment is not as ADD left it.
fn check_failed(what: String) -> CniError {
    CniError::new(code::NETWORK_SETUP_FAILED, format!("CHECK: {what}"), "")
}

/// The pod address from prevResult.
fn previous_address(conf: &NetConf) -> Result<IpAddr, CniError> {
    conf.prev_result
        .as_ref()
        .and_then(|r| r["ips"][0]["address"].as_str())
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "CHECK needs prevResult with the pod address",
                "",
            )
        })
}

/// The host veth exists, with our MAC and sysctls; returns it.
async fn check_host_veth(host: &KernelNetlink, att: &Attachment<'_>) -> Result<LinkInfo, CniError> {
    let Some(host_link) = host
        .link_by_name(&att.veth)
        .await
        .map_err(|e| netlink_error("host veth", e))?
    else {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "container {} has no host interface {}",
                att.container_id, att.veth
            ),
            "",
        ));
    };
    if host_link.mac != Some(MacAddr::HOST_VETH) {
        return Err(check_failed(format!(
            "{} MAC is not ee:ee:ee:ee:ee:ee",
            att.veth
        )));
    }
    for (key, want) in host_veth_sysctls(&att.veth) {
        let got = host
            .get_sysctl(&key)
            .await
            .map_err(|e| netlink_error("reading sysctls", e))?;
        if got.trim() != want {
            return Err(check_failed(format!(
                "sysctl {key} is {}, expected {want}",
                got.trim()
            )));
        }
    }
    Ok(host_link)
}

/// The host routes `host_prefix` to the veth (a workload route).
async fn check_host_route(
    host: &KernelNetlink,
    att: &Attachment<'_>,
    host_prefix: IpNetwork,
    host_index: u32,
) -> Result<(), CniError> {
    let routes = host
        .list_routes(&crate::netlink::RouteFilter::protocol(
            RouteProtocol::WORKLOAD,
        ))
        .await
        .map_err(|e| netlink_error("listing routes", e))?;
    if routes
        .iter()
        .any(|r| r.destination == host_prefix && r.output_ifindex == Some(host_index))
    {
        return Ok(());
    }
    Err(check_failed(format!(
        "host route {host_prefix} dev {} is missing",
        att.veth
    )))
}

/// CNI_IFNAME exists in the pod and carries `host_prefix`.
async fn check_pod_address(
    pod: &dyn Netlink,
    att: &Attachment<'_>,
    host_prefix: IpNetwork,
) -> Result<(), CniError> {
    let Some(pod_link) = pod
        .link_by_name(att.ifname)
        .await
        .map_err(|e| netlink_error("pod interface", e))?
    else {
        return Err(check_failed(format!(
            "interface {} is missing in the container",
            att.ifname
        )));
    };
    let addresses = pod
        .list_addresses(pod_link.index)
        .await
        .map_err(|e| netlink_error("pod addresses", e))?;
    if addresses.contains(&host_prefix) {
        return Ok(());
    }
    Err(check_failed(format!(
        "{} does not carry {host_prefix} (has {addresses:?})",
        att.ifname
    )))
}

/// The pod has its /32 route to the gateway and its default route via the gateway.
async fn check_pod_routes(pod: &dyn Netlink) -> Result<(), CniError> {
    let pod_routes = pod
        .list_routes(&crate::netlink::RouteFilter::default())
        .await
        .map_err(|e| netlink_error("pod routes", e))?;
    let gateway = IpAddr::V4(POD_GATEWAY_V4);
    let has_gateway = pod_routes
        .iter()
        .any(|r| r.destination.ip() == gateway && r.destination.prefix() == 32);
    let has_default = pod_routes
        .iter()
        .any(|r| r.destination.prefix() == 0 && r.gateway == Some(gateway));
    if !has_gateway || !has_default {
        return Err(check_failed(
            "the pod's routes via 169.254.1.1 are missing".into(),
        ));
    }
    Ok(())
}

async fn gc(conf: &NetConf, client: &Client) -> Result<(), CniError> {
    let keep: Vec<String> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| handle_of(&a.container_id, &a.ifname))
        .collect();
    let request = GcRequest {
        prefix: HANDLE_PREFIX.to_string(),
        keep,
        network: Some(conf.name.clone()),
    };
    let released: GcResponse = client
        .post("/v1/ipam/gc", &request)
        .map_err(|e| agent_error(e, "garbage collection"))?;
    let host = KernelNetlink::new()
        .await
        .map_err(|e| netlink_error("opening netlink", e))?;
    // Every pod veth (our name prefix, our MAC) not recorded by a kept attachment goes: the
    // released ones, and those of ADDs that died before their address was recorded.
    let keep_veths: std::collections::BTreeSet<&str> = released
        .kept
        .iter()
        .filter_map(|r| r.attributes.get("veth").map(String::as_str))
        .collect();
    let links = host
        .list_links()
        .await
        .map_err(|e| netlink_error("listing interfaces", e))?;
    for link in links {
        let ours = link.name.starts_with("rd")
            && link.kind.as_deref() == Some("veth")
            && link.mac == Some(MacAddr::HOST_VETH);
        if ours && !keep_veths.contains(link.name.as_str()) {
            host.delete_link(&link.name)
                .await
                .map_err(|e| netlink_error("deleting a leaked veth", e))?;
        }
    }
    Ok(())
}

fn status(client: &Client) -> Result<(), CniError> {
    client
        .get::<serde_json::Value>("/readyz")
        .map(|_| ())
        .map_err(|e| {
            CniError::new(
                code::PLUGIN_NOT_AVAILABLE,
                "the routed agent is not ready",
                e.to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's error bodies (the golden files its server produces) map to CNI codes: 503
    /// `unavailable` to 11 (decision 19), 409 `exhausted` to 101.
    #[test]
    fn agent_error_bodies_map_to_cni_codes() {
        use crate::api::v1::{golden, ApiError};
        for (name, status, expected) in [
            ("error-unavailable", 503, code::TRY_AGAIN_LATER),
            ("error-exhausted", 409, code::NO_ADDRESS),
            ("error-bgp-not-running", 404, code::NETWORK_SETUP_FAILED),
        ] {
            let body: ApiError = golden::read(name);
            let e = agent_error(
                ClientError::Api {
                    socket: "/run/routed/routed.sock".into(),
                    status,
                    error: body.error.clone(),
                    kind: body.kind,
                },
                "address allocation",
            );
            assert_eq!(e.code, expected, "{name}: {e:?}");
        }
        let reply: AllocateResponse = golden::read("ipam-allocate-response");
        assert_eq!(reply.addresses.len(), 1);
        let gc: GcResponse = golden::read("ipam-gc-response");
        assert!(gc.kept.iter().all(|r| r.attributes.contains_key("veth")));
        assert_eq!(golden::read::<NodeInfo>("node").pod_mtu, 1480);
    }

    #[test]
    fn names_follow_calico() {
        let mut env = CniEnv::default();
        env.args
            .insert("K8S_POD_NAMESPACE".into(), "default".into());
        env.args.insert("K8S_POD_NAME".into(), "nginx".into());
        let name = host_veth_name(&env, "abc", "eth0");
        let digest = sha1_smol::Sha1::from("default.nginx").digest().to_string();
        assert_eq!(name, format!("rd{}", &digest[..11]));
        assert_eq!(name.len(), 13);
        assert_ne!(host_veth_name(&env, "abc", "net1"), name);
        assert_eq!(handle_of("abc", "eth0"), "routed.abc.eth0");
    }

    #[test]
    fn version_and_unknown_commands() {
        let vars: HashMap<String, String> =
            [("CNI_COMMAND".to_string(), "VERSION".to_string())].into();
        let out = run(&vars, br#"{"cniVersion":"0.4.0"}"#).unwrap();
        assert!(
            out.contains("\"cniVersion\":\"0.4.0\"") && out.contains("1.1.0"),
            "{out}"
        );
        let vars: HashMap<String, String> =
            [("CNI_COMMAND".to_string(), "FROB".to_string())].into();
        assert_eq!(
            run(&vars, b"{}").unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
        assert_eq!(
            run(&HashMap::new(), b"{}").unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
    }

    /// The configuration is checked whole before the agent is asked: with no agent at the
    /// socket, a configuration without `name` is code 7 (invalid), not 11 (try again later).
    #[test]
    fn add_without_a_network_name_is_invalid_config_before_the_agent_is_asked() {
        let vars: HashMap<String, String> = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/none"),
            ("CNI_IFNAME", "eth0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for conf in [
            r#"{"cniVersion":"1.0.0","type":"routed-cni","socket":"/nonexistent/routed.sock"}"#,
            r#"{"cniVersion":"1.0.0","name":"a b","type":"routed-cni","socket":"/nonexistent/s"}"#,
            r#"{"cniVersion":"1.0.0","name":"routed","socket":"/nonexistent/routed.sock"}"#,
            r#"{"cniVersion":"1.0.0","name":"routed","type":"routed-cni","socket":"rel/s"}"#,
        ] {
            let err = run(&vars, conf.as_bytes()).unwrap_err();
            assert_eq!(err.code, code::INVALID_CONFIG, "{conf}: {err:?}");
        }
    }
}
