//! Topology (a): one guest, one LIO LUN, K initiators in one kernel.
//!
//! LIO's loopback fabric (tcm_loop) gives each target WWN its own SCSI host and its own I_T
//! nexus; linking every target's lun_0 to one fileio backstore shows the same LUN K times
//! (`/dev/sda`, `/dev/sdb`, ...), each path a distinct initiator to the persistent-reservation
//! code of the target. Note: PREEMPT AND ABORT hangs tcm_loop on the 6.1 kernel (target bug);
//! use [`crate::iscsi`] with LIO for it.

use crate::error::{Error, Result};
use crate::guest::Guest;

/// One LUN seen through several nexuses.
#[derive(Debug, Clone)]
pub struct TcmLoopLun {
    /// The block device of each nexus, in nexus order.
    pub devices: Vec<String>,
    /// The initiator port name (NAA WWN) of each nexus, in the same order.
    pub initiators: Vec<String>,
}

/// Creates a `size_mb` MiB fileio LUN and `nexuses` loopback targets exposing it.
pub fn setup(guest: &Guest, nexuses: usize, size_mb: u64) -> Result<TcmLoopLun> {
    let mut script = format!(
        r#"set -e
modprobe -a target_core_mod target_core_file tcm_loop
T=/sys/kernel/config/target
mkdir -p $T/core/fileio_0/lun0
echo "fd_dev_name=/var/tmp/lun0.img,fd_dev_size={bytes}" > $T/core/fileio_0/lun0/control
echo 1 > $T/core/fileio_0/lun0/enable
echo {serial} > $T/core/fileio_0/lun0/wwn/vpd_unit_serial
"#,
        serial = crate::iscsi::unit_serial(0),
        bytes = size_mb << 20
    );
    let mut initiators = Vec::new();
    for i in 0..nexuses {
        let target = format!("naa.50014050000{i:05x}");
        let initiator = format!("naa.50014051000{i:05x}");
        script.push_str(&format!(
            r#"mkdir -p $T/loopback/{target}/tpgt_1/lun/lun_0
echo {initiator} > $T/loopback/{target}/tpgt_1/nexus
ln -s $T/core/fileio_0/lun0 $T/loopback/{target}/tpgt_1/lun/lun_0/lun0
a=$(cat $T/loopback/{target}/tpgt_1/address)
i=0
while ! ls /sys/bus/scsi/devices/$a:0/block >/dev/null 2>&1 && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
d=$(ls /sys/bus/scsi/devices/$a:0/block)
while [ ! -b /dev/$d ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
echo /dev/$d
"#
        ));
        initiators.push(initiator);
    }
    let out = guest.run_ok(&script)?;
    let devices: Vec<String> = out.lines().map(String::from).collect();
    if devices.len() != nexuses {
        return Err(Error::Setup(format!(
            "tcm_loop: expected {nexuses} devices, got {devices:?}"
        )));
    }
    Ok(TcmLoopLun {
        devices,
        initiators,
    })
}
