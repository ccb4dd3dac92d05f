use super::*;
use crate::bgp::fsm::State;

fn peer(name: &str, address: &str, state: State) -> PeerStatus {
    PeerStatus {
        name: name.into(),
        address: address.parse().unwrap(),
        description: "node-to-node mesh".into(),
        state,
        since: 0,
        since_human: String::new(),
        info: String::new(),
        prefixes_received: 3,
        prefixes_advertised: 1,
        end_of_rib_received: true,
        remote_as: 64512,
        local_as: 64512,
        established_transitions: 2,
        messages_received: MessageCounts {
            keepalive: 7,
            ..Default::default()
        },
        messages_sent: MessageCounts {
            update: 4,
            ..Default::default()
        },
        session: None,
        reflection: None,
        bfd: None,
        errors: Default::default(),
    }
}

fn sample() -> String {
    let inputs = Inputs {
        peers: vec![
            peer("Mesh_10_0_0_2", "10.0.0.2", State::Established),
            peer("Mesh_10_0_0_3", "10.0.0.3", State::Active),
        ],
        rib_routes: 5,
        reconcilers: vec![("routes", 1)],
        slow: Slow {
            kernel_routes: vec![("bgp", 5), ("workload", 2)],
            ipam_allocated: 2,
            ipam_capacity: 64,
        },
    };
    global().observe_cni("ADD", 200, Duration::from_millis(3));
    let labels = DatastoreLabels {
        op: "get".into(),
        result: "success".into(),
    };
    global().datastore_requests.get_or_create(&labels).inc();
    global().observe_reconcile("routes", Duration::from_millis(2));
    encode(&registry_of(&inputs))
}

#[test]
fn every_metric_of_the_contract_is_exported() {
    let text = sample();
    for name in [
        "routed_build_info{version=",
        "routed_bgp_session_up{peer=\"10.0.0.2\",peer_asn=\"64512\",peer_type=\"mesh\"} 1",
        "routed_bgp_session_up{peer=\"10.0.0.3\",peer_asn=\"64512\",peer_type=\"mesh\"} 0",
        "routed_bgp_session_state{peer=\"10.0.0.3\",peer_asn=\"64512\",peer_type=\"mesh\"} 3",
        "routed_bgp_session_established_transitions_total{peer=\"10.0.0.2\"} 2",
        "routed_bgp_messages_received_total{peer=\"10.0.0.2\",type=\"keepalive\"} 7",
        "routed_bgp_messages_sent_total{peer=\"10.0.0.2\",type=\"update\"} 4",
        "routed_bgp_prefixes_received{peer=\"10.0.0.2\",afi_safi=\"ipv4_unicast\"} 3",
        "routed_bgp_prefixes_advertised{peer=\"10.0.0.2\",afi_safi=\"ipv4_unicast\"} 1",
        "routed_rib_routes{afi_safi=\"ipv4_unicast\"} 5",
        "routed_kernel_routes{class=\"bgp\"} 5",
        "routed_reconcile_duration_seconds_bucket{",
        "routed_reconcile_errors_total{reconciler=\"routes\"} 1",
        "routed_ipam_addresses_allocated 2",
        "routed_ipam_addresses_capacity 64",
        "routed_cni_requests_total{command=\"ADD\",result=\"success\"}",
        "routed_cni_request_duration_seconds_count{command=\"ADD\"}",
        "routed_datastore_requests_total{op=\"get\",result=\"success\"}",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}

#[test]
fn cni_commands_are_recognised_from_the_api_path() {
    assert_eq!(cni_command("POST", "/v1/ipam/allocate"), Some("ADD"));
    assert_eq!(cni_command("POST", "/v1/ipam/release"), Some("DEL"));
    assert_eq!(cni_command("GET", "/v1/ipam/allocations"), None);
}
