//! Benchmark (not part of the suite: `#[ignore]`, ~2-3 minutes): the cost of one voting-disk
//! poll round in a guest on virtio-blk disks, io_uring vs synchronous preads, and for context
//! the real sbd listing a 255-slot disk. Run it with `tests/bench/vdisk.sh` (release build,
//! installs sbd on the host; the guest sees the host's /usr/sbin/sbd through its 9p root).

use kmod_testing::{GuestSpec, Lab};
use std::time::Duration;
use tests::vdisk::{self, fenced};

/// Rounds per method; processes per whole-process measurement.
const ROUNDS: usize = 200;
const RUNS: usize = 30;

#[test]
#[ignore = "benchmark: run with tests/bench/vdisk.sh"]
fn vdisk_round_cost_in_guest_vs_sbd() {
    assert!(
        std::path::Path::new("/usr/sbin/sbd").exists(),
        "sbd is not installed on the host: `apt-get install sbd` (tests/bench/vdisk.sh does)"
    );
    let lab = Lab::new("vdisk-bench").unwrap();
    // vote0..2: our voting disks (255 slots need 1 MiB + 4 KiB); vote3: sbd's disk.
    let imgs = vdisk::images(&lab, 4, 8).unwrap();
    let g = lab
        .boot(vdisk::with_images(GuestSpec::new("bench"), &imgs))
        .unwrap();
    let all: Vec<String> = vdisk::devices(&g, 4)
        .unwrap()
        .split(' ')
        .map(String::from)
        .collect();
    let devs = all[..3].join(" ");
    let sbd_dev = &all[3];
    let bench = kmod_testing::project_binary("vdisk-bench")
        .display()
        .to_string();
    let long = Duration::from_secs(900);
    let run = |script: &str| {
        let out = g.run_with_timeout(script, long).unwrap();
        assert!(out.success(), "{script}: {}\n{}", out.stdout, out.stderr);
        out.stdout
    };
    let mut table = run(&format!("{bench} header"));
    table.push_str(&run(&format!("{bench} rounds {ROUNDS} {devs}")));
    table.push_str(&run(&format!(
        "{bench} exec {RUNS} -- {} disk watch --rounds 1 {devs}",
        fenced()
    )));
    table.push_str(&run(&format!(
        "{bench} exec {RUNS} -- {} disk dump {devs}",
        fenced()
    )));
    let created = run(&format!(
        "sbd -d {sbd_dev} create >/dev/null 2>&1 || sbd -d {sbd_dev} -v create; sbd -d {sbd_dev} dump"
    ));
    table.push_str(&run(&format!(
        "{bench} exec {RUNS} -- sbd -d {sbd_dev} list"
    )));
    let uname = run("uname -r; nproc; grep -m1 'model name' /proc/cpuinfo");
    println!(
        "guest: {}sbd header:\n{created}\nBENCH TABLE\n{table}",
        uname.replace('\n', " | ")
    );
}
