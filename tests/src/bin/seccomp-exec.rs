//! `seccomp-exec [--deny SYSCALL]... -- PROGRAM [ARGS]...`: runs PROGRAM under a seccomp filter
//! equivalent to containerd's `RuntimeDefault` profile on x86_64, for a container whose
//! capability bounding set holds none of the capabilities that widen that profile (no
//! CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, ...): the node agent's DaemonSet, which keeps
//! only NET_ADMIN and NET_RAW. A test helper for `tests/tests/vm_privileges.rs`, run inside the
//! user-mode-linux guest; the filter is inherited by every process PROGRAM starts (iptables,
//! ipset), as in a container.
//!
//! The profile, as containerd's `contrib/seccomp` builds it (the facts, transcribed): default
//! action `ERRNO(EPERM)`; an allowlist of ordinary system calls ([`ALLOWED`]); `personality`
//! only with the persona values 0, 0x8, 0x20000, 0x20008 and 0xffffffff; `clone` only without
//! any namespace flag (CLONE_NEWNS/UTS/IPC/USER/PID/NET/CGROUP); `clone3` answers ENOSYS (so
//! that the C library falls back to `clone`, whose flags the filter can see). `--deny` removes
//! names from the allowlist (to show what a missing system call does).
//!
//! It also sets no_new_privs (seccomp requires it without CAP_SYS_ADMIN; Kubernetes sets it
//! with `allowPrivilegeEscalation: false`).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name)),*]
    };
}

/// containerd's unconditional allowlist, less the names that do not exist on x86_64 (the
/// 32-bit `*32`/`*_time64` variants, `socketcall`, `ipc`, ...), plus `ptrace` (allowed on
/// kernels from 4.8) and the x86_64 extras `arch_prctl` and `modify_ldt`.
const ALLOWED: &[(&str, i64)] = syscalls!(
    SYS_accept,
    SYS_accept4,
    SYS_access,
    SYS_adjtimex,
    SYS_alarm,
    SYS_bind,
    SYS_brk,
    SYS_capget,
    SYS_capset,
    SYS_chdir,
    SYS_chmod,
    SYS_chown,
    SYS_clock_adjtime,
    SYS_clock_getres,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_close,
    SYS_close_range,
    SYS_connect,
    SYS_copy_file_range,
    SYS_creat,
    SYS_dup,
    SYS_dup2,
    SYS_dup3,
    SYS_epoll_create,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_ctl_old,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_epoll_wait,
    SYS_epoll_wait_old,
    SYS_eventfd,
    SYS_eventfd2,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_fadvise64,
    SYS_fallocate,
    SYS_fanotify_mark,
    SYS_fchdir,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchown,
    SYS_fchownat,
    SYS_fcntl,
    SYS_fdatasync,
    SYS_fgetxattr,
    SYS_flistxattr,
    SYS_flock,
    SYS_fork,
    SYS_fremovexattr,
    SYS_fsetxattr,
    SYS_fstat,
    SYS_fstatfs,
    SYS_fsync,
    SYS_ftruncate,
    SYS_futex,
    SYS_futex_waitv,
    SYS_futimesat,
    SYS_getcpu,
    SYS_getcwd,
    SYS_getdents,
    SYS_getdents64,
    SYS_getegid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getgroups,
    SYS_getitimer,
    SYS_getpeername,
    SYS_getpgid,
    SYS_getpgrp,
    SYS_getpid,
    SYS_getppid,
    SYS_getpriority,
    SYS_getrandom,
    SYS_getresgid,
    SYS_getresuid,
    SYS_getrlimit,
    SYS_get_robust_list,
    SYS_getrusage,
    SYS_getsid,
    SYS_getsockname,
    SYS_getsockopt,
    SYS_get_thread_area,
    SYS_gettid,
    SYS_gettimeofday,
    SYS_getuid,
    SYS_getxattr,
    SYS_inotify_add_watch,
    SYS_inotify_init,
    SYS_inotify_init1,
    SYS_inotify_rm_watch,
    SYS_io_cancel,
    SYS_ioctl,
    SYS_io_destroy,
    SYS_io_getevents,
    SYS_ioprio_get,
    SYS_ioprio_set,
    SYS_io_setup,
    SYS_io_submit,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_io_uring_setup,
    SYS_kill,
    SYS_landlock_add_rule,
    SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self,
    SYS_lchown,
    SYS_lgetxattr,
    SYS_link,
    SYS_linkat,
    SYS_listen,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_lremovexattr,
    SYS_lseek,
    SYS_lsetxattr,
    SYS_lstat,
    SYS_madvise,
    SYS_membarrier,
    SYS_memfd_create,
    SYS_memfd_secret,
    SYS_mincore,
    SYS_mkdir,
    SYS_mkdirat,
    SYS_mknod,
    SYS_mknodat,
    SYS_mlock,
    SYS_mlock2,
    SYS_mlockall,
    SYS_mmap,
    SYS_mprotect,
    SYS_mq_getsetattr,
    SYS_mq_notify,
    SYS_mq_open,
    SYS_mq_timedreceive,
    SYS_mq_timedsend,
    SYS_mq_unlink,
    SYS_mremap,
    SYS_msgctl,
    SYS_msgget,
    SYS_msgrcv,
    SYS_msgsnd,
    SYS_msync,
    SYS_munlock,
    SYS_munlockall,
    SYS_munmap,
    SYS_nanosleep,
    SYS_newfstatat,
    SYS_open,
    SYS_openat,
    SYS_openat2,
    SYS_pause,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_pipe,
    SYS_pipe2,
    SYS_poll,
    SYS_ppoll,
    SYS_prctl,
    SYS_pread64,
    SYS_preadv,
    SYS_preadv2,
    SYS_prlimit64,
    SYS_process_mrelease,
    SYS_pselect6,
    SYS_pwrite64,
    SYS_pwritev,
    SYS_pwritev2,
    SYS_read,
    SYS_readahead,
    SYS_readlink,
    SYS_readlinkat,
    SYS_readv,
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_remap_file_pages,
    SYS_removexattr,
    SYS_rename,
    SYS_renameat,
    SYS_renameat2,
    SYS_restart_syscall,
    SYS_rmdir,
    SYS_rseq,
    SYS_rt_sigaction,
    SYS_rt_sigpending,
    SYS_rt_sigprocmask,
    SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn,
    SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait,
    SYS_rt_tgsigqueueinfo,
    SYS_sched_getaffinity,
    SYS_sched_getattr,
    SYS_sched_getparam,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_getscheduler,
    SYS_sched_rr_get_interval,
    SYS_sched_setaffinity,
    SYS_sched_setattr,
    SYS_sched_setparam,
    SYS_sched_setscheduler,
    SYS_sched_yield,
    SYS_seccomp,
    SYS_select,
    SYS_semctl,
    SYS_semget,
    SYS_semop,
    SYS_semtimedop,
    SYS_sendfile,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    SYS_setfsgid,
    SYS_setfsuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_setitimer,
    SYS_setpgid,
    SYS_setpriority,
    SYS_setregid,
    SYS_setresgid,
    SYS_setresuid,
    SYS_setreuid,
    SYS_setrlimit,
    SYS_set_robust_list,
    SYS_setsid,
    SYS_setsockopt,
    SYS_set_thread_area,
    SYS_set_tid_address,
    SYS_setuid,
    SYS_setxattr,
    SYS_shmat,
    SYS_shmctl,
    SYS_shmdt,
    SYS_shmget,
    SYS_shutdown,
    SYS_sigaltstack,
    SYS_signalfd,
    SYS_signalfd4,
    SYS_socket,
    SYS_socketpair,
    SYS_splice,
    SYS_stat,
    SYS_statfs,
    SYS_statx,
    SYS_symlink,
    SYS_symlinkat,
    SYS_sync,
    SYS_sync_file_range,
    SYS_syncfs,
    SYS_sysinfo,
    SYS_tee,
    SYS_tgkill,
    SYS_time,
    SYS_timer_create,
    SYS_timer_delete,
    SYS_timer_getoverrun,
    SYS_timer_gettime,
    SYS_timer_settime,
    SYS_timerfd_create,
    SYS_timerfd_gettime,
    SYS_timerfd_settime,
    SYS_times,
    SYS_tkill,
    SYS_truncate,
    SYS_umask,
    SYS_uname,
    SYS_unlink,
    SYS_unlinkat,
    SYS_utime,
    SYS_utimensat,
    SYS_utimes,
    SYS_vfork,
    SYS_vmsplice,
    SYS_wait4,
    SYS_waitid,
    SYS_write,
    SYS_writev,
    SYS_ptrace,
    SYS_arch_prctl,
    SYS_modify_ldt,
);

/// Allowed names the `libc` crate has no constant for on x86_64, with their numbers.
const ALLOWED_BY_NUMBER: &[(&str, i64)] = &[("SYS_io_pgetevents", 333)];

fn allowed() -> impl Iterator<Item = &'static (&'static str, i64)> {
    ALLOWED.iter().chain(ALLOWED_BY_NUMBER)
}

/// `personality` values the profile allows (PER_LINUX, PER_LINUX32, UNAME26 and their
/// combination, and the 0xffffffff query).
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Namespace flags `clone` must not carry without CAP_SYS_ADMIN.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

fn filters(deny: &[String]) -> Result<(BpfProgram, BpfProgram), String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (name, nr) in allowed() {
        let short = name.trim_start_matches("SYS_");
        if !deny.iter().any(|d| d == short) {
            rules.insert(*nr, Vec::new());
        }
    }
    let cond = |op, value| {
        SeccompCondition::new(0, SeccompCmpArgLen::Qword, op, value)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| e.to_string())
    };
    let personality = PERSONALITIES
        .iter()
        .map(|v| cond(SeccompCmpOp::Eq, *v))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_personality, personality);
    rules.insert(
        libc::SYS_clone,
        vec![cond(SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS), 0)?],
    );
    let main = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| e.to_string())?;
    // A second filter for clone3 -> ENOSYS: the kernel runs every filter and, among equal
    // actions, keeps the most recently installed one's errno.
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| e.to_string())?;
    Ok((main, clone3))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut deny = Vec::new();
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--deny" => match args.next() {
                Some(name) => deny.push(name),
                None => {
                    eprintln!("seccomp-exec: --deny needs a system call name");
                    return ExitCode::from(2);
                }
            },
            "--" => {
                command.extend(args.by_ref());
            }
            other => {
                eprintln!("seccomp-exec: unexpected argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let Some((program, rest)) = command.split_first() else {
        eprintln!("usage: seccomp-exec [--deny SYSCALL]... -- PROGRAM [ARGS]...");
        return ExitCode::from(2);
    };
    for name in &deny {
        if !allowed().any(|(n, _)| n.trim_start_matches("SYS_") == name) {
            eprintln!("seccomp-exec: --deny {name}: not in the allowlist");
            return ExitCode::from(2);
        }
    }
    let (main, clone3) = match filters(&deny) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("seccomp-exec: building the filter: {e}");
            return ExitCode::from(2);
        }
    };
    for filter in [&main, &clone3] {
        if let Err(e) = seccompiler::apply_filter_all_threads(filter) {
            eprintln!("seccomp-exec: installing the filter: {e}");
            return ExitCode::from(2);
        }
    }
    let e = Command::new(program).args(rest).exec();
    eprintln!("seccomp-exec: exec {program}: {e}");
    ExitCode::from(127)
}
