//! A real container runtime calls routed-cni: containerd (Debian package) started by the test on
//! its own socket and state directories, a busybox OCI image built locally from busybox-static,
//! `ctr run --cni` inside a node namespace running `routed`. Needs root and ROUTED_E2E=1.

mod common;

use common::{Agent, Netns};
use routed::ipam::Ipam;
use routed::model::IpPool;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const IMAGE: &str = "routed-test/busybox:1";

fn sha256_of(path: &Path) -> String {
    let out = common::run_ok("sha256sum", &[path.to_str().unwrap()]);
    out.split_whitespace().next().unwrap().to_string()
}

/// An OCI image layout tar holding busybox-static and a few applet links.
fn build_busybox_image(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("busybox-static is not installed");
    for applet in ["sh", "ip", "ping", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = dir.join("layer.tar");
    common::run_ok(
        "tar",
        &[
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            layer.to_str().unwrap(),
            ".",
        ],
    );
    let put = |file: &Path| -> (String, u64) {
        let digest = sha256_of(file);
        std::fs::copy(file, blobs.join(&digest)).unwrap();
        (digest, std::fs::metadata(file).unwrap().len())
    };
    let (layer_digest, layer_size) = put(&layer);
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_digest}"]}}}}"#
        ),
    )
    .unwrap();
    let (config_digest, config_size) = put(&config);
    let manifest = dir.join("manifest.json");
    std::fs::write(
        &manifest,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_digest}","size":{layer_size}}}]}}"#
        ),
    )
    .unwrap();
    let (manifest_digest, manifest_size) = put(&manifest);
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_digest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"{IMAGE}"}}}}]}}"#
        ),
    )
    .unwrap();
    let tar = dir.join("busybox-oci.tar");
    common::run_ok(
        "tar",
        &[
            "-C",
            layout.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            "oci-layout",
            "index.json",
            "blobs",
        ],
    );
    tar
}

/// containerd on its own socket and directories; stopped by pid when dropped.
struct Containerd {
    child: Child,
    socket: PathBuf,
    state: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        let (root, state, socket) = (
            dir.join("root"),
            dir.join("state"),
            dir.join("containerd.sock"),
        );
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        // Without the CRI plugin: it would create /etc/cni/net.d on the host by itself.
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .arg("--address")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd is not installed (apt-get install containerd)");
        common::wait_for("containerd answers `ctr version`", || {
            let out = Command::new("ctr")
                .arg("-a")
                .arg(&socket)
                .arg("version")
                .output()
                .map_err(|e| e.to_string())?;
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
        });
        Containerd {
            child,
            socket,
            state,
        }
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // containerd leaves its shim mounts under the state dir.
        let _ = Command::new("umount").arg("-R").arg(&self.state).status();
    }
}

/// Our conflist in /etc/cni/net.d and our binary in /opt/cni/bin, removed again on drop; what was
/// there before is never touched (our names sort first and are new).
struct CniFiles {
    created: Vec<PathBuf>,
}

impl CniFiles {
    fn install(socket: &Path) -> CniFiles {
        let mut created = Vec::new();
        for dir in ["/etc/cni", "/etc/cni/net.d", "/opt/cni", "/opt/cni/bin"] {
            if !Path::new(dir).exists() {
                std::fs::create_dir(dir).unwrap();
                created.push(PathBuf::from(dir));
            }
        }
        let conf = PathBuf::from("/etc/cni/net.d/00-routed-test.conflist");
        let bin = PathBuf::from("/opt/cni/bin/routed-cni");
        assert!(
            !conf.exists() && !bin.exists(),
            "refusing to overwrite an existing {conf:?} or {bin:?}"
        );
        std::fs::write(
            &conf,
            format!(r#"{{"cniVersion":"1.0.0","name":"routed","plugins":[{{"type":"routed-cni","socket":"{}"}}]}}"#, socket.display()),
        )
        .unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_routed-cni"), &bin).unwrap();
        created.push(conf);
        created.push(bin);
        CniFiles { created }
    }
}

impl Drop for CniFiles {
    fn drop(&mut self) {
        for path in self.created.iter().rev() {
            let _ = if path.is_dir() {
                std::fs::remove_dir(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_runs_a_container_on_routed_cni() {
    if !common::require_e2e("containerd_runs_a_container_on_routed_cni") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("routed.db").display());
    Ipam::new(common::open(&url).await)
        .create_pool(&IpPool::new("ctr-pods", "10.79.0.0/16".parse().unwrap()))
        .await
        .unwrap();
    let router = Netns::new("rt-rtr");
    let node = Netns::new("rt-node");
    node.exec_ok(&[
        "ip",
        "link",
        "add",
        "uplink",
        "type",
        "veth",
        "peer",
        "name",
        "down0",
        "netns",
        &router.name,
    ]);
    node.exec_ok(&["ip", "addr", "add", "192.0.2.1/24", "dev", "uplink"]);
    node.exec_ok(&["ip", "link", "set", "uplink", "up"]);
    node.exec_ok(&["ip", "route", "add", "default", "via", "192.0.2.254"]);
    router.exec_ok(&["ip", "addr", "add", "192.0.2.254/24", "dev", "down0"]);
    router.exec_ok(&["ip", "link", "set", "down0", "up"]);
    let agent = Agent::start(&node, "ctr-node", &url, "192.0.2.1/24", dir.path());

    let image = build_busybox_image(dir.path());
    let containerd = Containerd::start(dir.path());
    let out = containerd.ctr(&["images", "import", image.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _files = CniFiles::install(&agent.socket);

    // ctr runs CNI from its own network namespace: the node's.
    let out = Command::new("ip")
        .args(["netns", "exec", &node.name, "ctr", "-a"])
        .arg(&containerd.socket)
        .args(["run", "--cni", "--rm", IMAGE, "routed-ctr-test"])
        .args([
            "sh",
            "-c",
            "ip -4 -o addr show dev eth0; ip route; ping -c 2 -W 2 192.0.2.1",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ctr run: {text}");
    assert!(
        text.contains("inet 10.79."),
        "the container got an address from our pool: {text}"
    );
    assert!(text.contains("default via 169.254.1.1 dev eth0"), "{text}");
    assert!(
        text.contains("2 packets received"),
        "the container reached the host: {text}"
    );

    // The container exited: DEL ran, nothing is left.
    let report = Ipam::new(common::open(&url).await).check().await.unwrap();
    assert!(report.is_clean() && report.allocated == 0, "{report:?}");
    let links = node.exec_ok(&["ip", "-o", "link", "show"]);
    assert!(
        !links.lines().any(|l| l
            .split(':')
            .nth(1)
            .is_some_and(|n| n.trim().starts_with("rd"))),
        "{links}"
    );
    drop(agent);
}
