// SPDX-License-Identifier: GPL-2.0
/*
 * freeze: fault injection for the fencing stack's tests.
 *
 * Loading this module freezes the whole kernel for `seconds` seconds: stop_machine() runs
 * freeze_cpus() on every CPU with interrupts off, so no task, timer, softirq or in-kernel
 * watchdog (softdog) runs until it returns. Only an external watchdog (a hardware timer, or
 * QEMU's emulated i6300esb) can reset the machine meanwhile. This reproduces "hung for 40 s and
 * about to finish its write" from the outside.
 *
 * The module stays loaded afterwards (rmmod it to load it again).
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/stop_machine.h>
#include <linux/delay.h>
#include <linux/nmi.h>

static unsigned int seconds = 30;
module_param(seconds, uint, 0444);
MODULE_PARM_DESC(seconds, "how long the whole kernel stays frozen (default 30, max 600)");

static int freeze_cpus(void *unused)
{
	unsigned int ms;

	/* stop_machine runs this on every online CPU; each one spins the full duration. */
	for (ms = 0; ms < seconds * 1000; ms++) {
		mdelay(1);
		/* Keep the NMI hard-lockup detector quiet: the freeze is the point, not a bug. */
		touch_nmi_watchdog();
	}
	return 0;
}

static int __init freeze_init(void)
{
	if (seconds > 600)
		return -EINVAL;
	pr_info("freeze: stopping all CPUs for %u s\n", seconds);
	stop_machine(freeze_cpus, NULL, cpu_online_mask);
	pr_info("freeze: thawed after %u s\n", seconds);
	return 0;
}

static void __exit freeze_exit(void)
{
}

module_init(freeze_init);
module_exit(freeze_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Freeze the whole kernel with stop_machine for fault-injection tests");
