/*
 * LD_PRELOAD shim for Debian's user-mode-linux 6.1 kernel (/usr/bin/linux.uml) on hosts whose XSAVE area is larger
 * than the FP register buffer that kernel was built with (seen on a Xeon with AMX: 11,008 bytes).
 *
 * UML keeps each guest process's FP/vector state in a fixed-size buffer and writes it back into the host process
 * with ptrace(PTRACE_SETREGSET, NT_X86_XSTATE). The host kernel accepts that only with a buffer of exactly its own
 * XSAVE size (arch/x86/kernel/fpu/regset.c: count != fpu_user_cfg.max_size → EFAULT), so on such a host the guest
 * dies at its first process switch ("userspace - ptrace set fp regs failed, errno = 14", then a panic). Newer UML
 * kernels size the buffer from the host instead; bookworm's package does not.
 *
 * This shim changes nothing else: a SETREGSET of a shorter XSAVE buffer is completed from the tracee's current state
 * (read with GETREGSET at full size), with UML's bytes on top and, in the XSAVE header, UML's feature bits for the
 * components inside its buffer and the current bits for those beyond it. Any other ptrace call goes straight to libc.
 * On a host whose XSAVE area fits UML's buffer the shim passes every call through after one extra read.
 *
 * Built by tests/vm/run.sh with the host's cc; used only for the test kernel, never by svcnet itself.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NT_X86_XSTATE 0x202
#define XSAVE_HEADER_OFFSET 512
#define XSAVE_MAX 65536

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

static unsigned char full_state[XSAVE_MAX];

/*
 * Mask of the XSAVE components whose data lies wholly inside the first `len` bytes. Remembered for the last `len`
 * asked (UML always passes the same): CPUID traps to the hypervisor on a virtual machine (~15 µs each here), and
 * this runs at every switch into a guest process.
 */
static uint64_t components_within(size_t len)
{
	static size_t cached_len;
	static uint64_t cached_mask;
	if (len == cached_len)
		return cached_mask;
	uint64_t mask = 3; /* x87 and SSE live in the legacy area */
	unsigned int eax, ebx, ecx, edx;
	for (unsigned int i = 2; i < 64; i++) {
		if (!__get_cpuid_count(0xd, i, &eax, &ebx, &ecx, &edx) || eax == 0)
			continue;
		if ((size_t)ebx + eax <= len)
			mask |= (uint64_t)1 << i;
	}
	cached_len = len;
	cached_mask = mask;
	return mask;
}

long ptrace(enum __ptrace_request request, ...)
{
	static ptrace_fn real;
	va_list ap;
	va_start(ap, request);
	pid_t pid = va_arg(ap, pid_t);
	void *addr = va_arg(ap, void *);
	void *data = va_arg(ap, void *);
	va_end(ap);
	if (!real)
		real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");

	if (request != PTRACE_SETREGSET || (uintptr_t)addr != NT_X86_XSTATE || data == NULL)
		return real(request, pid, addr, data);

	/* The host's XSAVE size, learned from the first full read; until then 0. */
	static size_t host_size;
	struct iovec *given = data;
	if (given->iov_len < XSAVE_HEADER_OFFSET + 8 || (host_size && given->iov_len >= host_size))
		return real(request, pid, addr, data);
	struct iovec full = { full_state, sizeof full_state };
	if (real(PTRACE_GETREGSET, pid, (void *)(uintptr_t)NT_X86_XSTATE, &full) < 0)
		return real(request, pid, addr, data);
	host_size = full.iov_len;
	if (given->iov_len >= host_size)
		return real(request, pid, addr, data);

	uint64_t current_bv, given_bv;
	memcpy(&current_bv, full_state + XSAVE_HEADER_OFFSET, 8);
	memcpy(&given_bv, (unsigned char *)given->iov_base + XSAVE_HEADER_OFFSET, 8);
	uint64_t inside = components_within(given->iov_len);
	memcpy(full_state, given->iov_base, given->iov_len);
	uint64_t bv = (given_bv & inside) | (current_bv & ~inside);
	memcpy(full_state + XSAVE_HEADER_OFFSET, &bv, 8);
	return real(request, pid, addr, &full);
}
