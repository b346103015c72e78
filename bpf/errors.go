package bpf

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// memlockHint is what cilium/ebpf appends to every EPERM. On kernels >= 5.11
// memory is not charged to RLIMIT_MEMLOCK, so the hint sends people the
// wrong way; the real causes are capabilities or lockdown.
const memlockHint = " (MEMLOCK may be too low, consider rlimit.RemoveMemlock)"

// loadError keeps the original error for errors.Is/As but prints a message
// that says what is missing and what to do.
type loadError struct {
	msg   string
	cause error
}

func (e *loadError) Error() string { return e.msg }
func (e *loadError) Unwrap() error { return e.cause }

func explainLoadError(what string, err error) error {
	detail := strings.ReplaceAll(err.Error(), memlockHint, "")
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) && !isVerifierError(err):
		missing := missingCapabilities()
		if len(missing) > 0 {
			return &loadError{fmt.Sprintf("%s: permission denied: missing %s; run the daemon as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (CAP_SYS_ADMIN on kernels before 5.8) (%s)",
				what, strings.Join(missing, ", "), detail), err}
		}
		return &loadError{fmt.Sprintf("%s: permission denied although CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN are held: kernel lockdown, an LSM or a seccomp profile refuses bpf(); check `cat /sys/kernel/security/lockdown` and the pod's seccomp profile (%s)",
			what, detail), err}
	case errors.Is(err, btf.ErrNotFound):
		return &loadError{fmt.Sprintf("%s: no BTF: the kernel has no /sys/kernel/btf/vmlinux (needs CONFIG_DEBUG_INFO_BTF=y) (%s)", what, detail), err}
	case isVerifierError(err) && strings.Contains(fmt.Sprintf("%+v", err), "!root") && len(missingCapabilities()) > 0:
		// Without CAP_PERFMON the verifier runs in unprivileged mode and refuses pointer
		// arithmetic ("prohibited for !root"): a capability problem, not a program bug.
		return &loadError{fmt.Sprintf("%s: permission denied: missing %s (the verifier refuses packet pointer arithmetic without CAP_PERFMON); run the daemon as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN",
			what, strings.Join(missingCapabilities(), ", ")), err}
	case isVerifierError(err):
		return &loadError{fmt.Sprintf("%s: the kernel verifier rejected the program, please report this with the kernel version (`uname -r`): %+v", what, err), err}
	case errors.Is(err, ebpf.ErrNotSupported):
		return &loadError{fmt.Sprintf("%s: kernel too old for this probe (needs cgroup_skb, bpf_skb_cgroup_id and map-in-map, Linux >= 5.8 recommended) (%s)", what, detail), err}
	}
	return &loadError{fmt.Sprintf("%s: %s", what, detail), err}
}

func isVerifierError(err error) bool {
	var ve *ebpf.VerifierError
	return errors.As(err, &ve)
}

// missingCapabilities lists the BPF-related capabilities the process lacks in
// its effective set. CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON.
func missingCapabilities() []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(uint(c)%32)) != 0 }
	var missing []string
	sysAdmin := has(unix.CAP_SYS_ADMIN)
	if !has(unix.CAP_BPF) && !sysAdmin {
		missing = append(missing, "CAP_BPF")
	}
	if !has(unix.CAP_PERFMON) && !sysAdmin {
		missing = append(missing, "CAP_PERFMON")
	}
	if !has(unix.CAP_NET_ADMIN) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	return missing
}
