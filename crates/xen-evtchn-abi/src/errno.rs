//! Xen's error numbers, as returned (negated) by hypercalls.
//!
//! Values come from `xen/include/public/errno.h`. Xen's numbers match the
//! classic Linux/x86 numbers, but they are part of Xen's ABI in their own
//! right: a guest on any architecture sees these values.

use core::fmt;

macro_rules! define_errno {
    ($( $(#[$attr:meta])* $name:ident = $value:literal, $desc:literal; )*) => {
        /// One of Xen's error numbers.
        ///
        /// A failing hypercall returns the *negated* value; see
        /// [`Errno::as_hypercall_ret`]. The discriminant is Xen's positive
        /// number, so `Errno::EINVAL as i32 == 22`.
        ///
        /// ```
        /// use xen_evtchn_abi::Errno;
        ///
        /// assert_eq!(Errno::EINVAL.as_raw(), 22);
        /// assert_eq!(Errno::EINVAL.as_hypercall_ret(), -22);
        /// assert_eq!(Errno::from_raw(22), Some(Errno::EINVAL));
        /// assert_eq!(Errno::from_hypercall_ret(-38), Some(Errno::ENOSYS));
        /// assert_eq!(Errno::EINVAL.name(), "EINVAL");
        /// ```
        #[repr(i32)]
        #[allow(clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Errno {
            $( $(#[$attr])* $name = $value, )*
        }

        impl Errno {
            /// Every error number Xen's header defines, in ascending order
            /// (aliases appear once, under their primary name).
            pub const ALL: &'static [Errno] = &[ $( Errno::$name, )* ];

            /// Maps a positive Xen error number to its variant; `None` for a
            /// number Xen does not define (including 0 and negative values).
            pub const fn from_raw(raw: i32) -> Option<Errno> {
                match raw {
                    $( $value => Some(Errno::$name), )*
                    _ => None,
                }
            }

            /// The symbolic name, e.g. `"EINVAL"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Errno::$name => stringify!($name), )*
                }
            }

            /// A short human-readable description, e.g. `"invalid argument"`.
            pub const fn description(self) -> &'static str {
                match self {
                    $( Errno::$name => $desc, )*
                }
            }
        }
    };
}

define_errno! {
    /// Operation not permitted (e.g. an XSM policy denial).
    EPERM = 1, "operation not permitted";
    /// No such entry (event channels use it for a vCPU that does not exist).
    ENOENT = 2, "no such entry";
    /// No such domain (event channels use it for an unknown domain id).
    ESRCH = 3, "no such domain or process";
    /// Interrupted call. Xen-internal: the header only defines it when
    /// building Xen itself; a guest should never see it.
    EINTR = 4, "interrupted call (Xen-internal)";
    /// Input/output error.
    EIO = 5, "input/output error";
    /// No such device or address.
    ENXIO = 6, "no such device or address";
    /// Argument list too long.
    E2BIG = 7, "argument list too long";
    /// Bad executable format.
    ENOEXEC = 8, "bad executable format";
    /// Bad file (handle) number.
    EBADF = 9, "bad file number";
    /// No child processes.
    ECHILD = 10, "no child processes";
    /// Try again later. [`Errno::EWOULDBLOCK`] is an alias.
    EAGAIN = 11, "resource temporarily unavailable, try again";
    /// Out of memory.
    ENOMEM = 12, "out of memory";
    /// Permission denied.
    EACCES = 13, "permission denied";
    /// Bad address (a guest buffer could not be read or written).
    EFAULT = 14, "bad guest address";
    /// Resource busy.
    EBUSY = 16, "resource busy";
    /// Object already exists.
    EEXIST = 17, "already exists";
    /// Cross-device link.
    EXDEV = 18, "cross-device link";
    /// No such device.
    ENODEV = 19, "no such device";
    /// Not a directory.
    ENOTDIR = 20, "not a directory";
    /// Is a directory.
    EISDIR = 21, "is a directory";
    /// Invalid argument.
    EINVAL = 22, "invalid argument";
    /// Too many open files in the system.
    ENFILE = 23, "system-wide file table full";
    /// Too many open files.
    EMFILE = 24, "too many open files";
    /// No space left (event channels: no free port below the limit).
    ENOSPC = 28, "no space left";
    /// Read-only file system.
    EROFS = 30, "read-only file system";
    /// Too many links.
    EMLINK = 31, "too many links";
    /// Argument outside the function's domain.
    EDOM = 33, "argument out of range of the function";
    /// Result not representable.
    ERANGE = 34, "result out of range";
    /// Deadlock would occur. [`Errno::EDEADLOCK`] is an alias.
    EDEADLK = 35, "deadlock would occur";
    /// Name too long.
    ENAMETOOLONG = 36, "name too long";
    /// No locks available.
    ENOLCK = 37, "no locks available";
    /// Function not implemented (unknown hypercall or sub-command).
    ENOSYS = 38, "function not implemented";
    /// Directory not empty.
    ENOTEMPTY = 39, "directory not empty";
    /// No data available.
    ENODATA = 61, "no data available";
    /// Timer expired.
    ETIME = 62, "timer expired";
    /// Not a data message.
    EBADMSG = 74, "bad message";
    /// Value too large for its type.
    EOVERFLOW = 75, "value too large";
    /// Illegal byte sequence.
    EILSEQ = 84, "illegal byte sequence";
    /// Restart the call. Xen-internal: the header only defines it when
    /// building Xen itself; Xen turns it into a hypercall continuation and a
    /// guest should never see it.
    ERESTART = 85, "call should be restarted (Xen-internal)";
    /// Not a socket.
    ENOTSOCK = 88, "not a socket";
    /// Message too large.
    EMSGSIZE = 90, "message too large";
    /// Operation not supported.
    EOPNOTSUPP = 95, "operation not supported";
    /// Address already in use.
    EADDRINUSE = 98, "address already in use";
    /// Address not available.
    EADDRNOTAVAIL = 99, "address not available";
    /// No buffer space available.
    ENOBUFS = 105, "no buffer space available";
    /// Already connected.
    EISCONN = 106, "already connected";
    /// Not connected.
    ENOTCONN = 107, "not connected";
    /// Timed out.
    ETIMEDOUT = 110, "timed out";
    /// Connection refused.
    ECONNREFUSED = 111, "connection refused";
}

impl Errno {
    /// Alias of [`Errno::EAGAIN`] (same number, 11), as in Xen's header.
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;

    /// Alias of [`Errno::EDEADLK`] (same number, 35), as in Xen's header.
    pub const EDEADLOCK: Errno = Errno::EDEADLK;

    /// Xen's positive error number, e.g. `22` for `EINVAL`.
    pub const fn as_raw(self) -> i32 {
        self as i32
    }

    /// The value a failing hypercall returns: the negated error number,
    /// e.g. `-22` for `EINVAL`.
    pub const fn as_hypercall_ret(self) -> i64 {
        -(self as i64)
    }

    /// Interprets a hypercall return value: `Some` for the negation of a
    /// known error number, `None` for success values (zero or positive) and
    /// unknown numbers.
    pub const fn from_hypercall_ret(ret: i64) -> Option<Errno> {
        if ret >= 0 || ret < -(i32::MAX as i64) {
            return None;
        }
        Errno::from_raw((-ret) as i32)
    }
}

impl fmt::Display for Errno {
    /// Writes the name and a short description, e.g.
    /// `EINVAL (invalid argument)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.description())
    }
}

impl core::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    // Every (name, value) pair below is copied by hand from
    // xen/include/public/errno.h.
    const XEN_ERRNO_TABLE: &[(Errno, i32, &str)] = &[
        (Errno::EPERM, 1, "EPERM"),
        (Errno::ENOENT, 2, "ENOENT"),
        (Errno::ESRCH, 3, "ESRCH"),
        (Errno::EINTR, 4, "EINTR"),
        (Errno::EIO, 5, "EIO"),
        (Errno::ENXIO, 6, "ENXIO"),
        (Errno::E2BIG, 7, "E2BIG"),
        (Errno::ENOEXEC, 8, "ENOEXEC"),
        (Errno::EBADF, 9, "EBADF"),
        (Errno::ECHILD, 10, "ECHILD"),
        (Errno::EAGAIN, 11, "EAGAIN"),
        (Errno::ENOMEM, 12, "ENOMEM"),
        (Errno::EACCES, 13, "EACCES"),
        (Errno::EFAULT, 14, "EFAULT"),
        (Errno::EBUSY, 16, "EBUSY"),
        (Errno::EEXIST, 17, "EEXIST"),
        (Errno::EXDEV, 18, "EXDEV"),
        (Errno::ENODEV, 19, "ENODEV"),
        (Errno::ENOTDIR, 20, "ENOTDIR"),
        (Errno::EISDIR, 21, "EISDIR"),
        (Errno::EINVAL, 22, "EINVAL"),
        (Errno::ENFILE, 23, "ENFILE"),
        (Errno::EMFILE, 24, "EMFILE"),
        (Errno::ENOSPC, 28, "ENOSPC"),
        (Errno::EROFS, 30, "EROFS"),
        (Errno::EMLINK, 31, "EMLINK"),
        (Errno::EDOM, 33, "EDOM"),
        (Errno::ERANGE, 34, "ERANGE"),
        (Errno::EDEADLK, 35, "EDEADLK"),
        (Errno::ENAMETOOLONG, 36, "ENAMETOOLONG"),
        (Errno::ENOLCK, 37, "ENOLCK"),
        (Errno::ENOSYS, 38, "ENOSYS"),
        (Errno::ENOTEMPTY, 39, "ENOTEMPTY"),
        (Errno::ENODATA, 61, "ENODATA"),
        (Errno::ETIME, 62, "ETIME"),
        (Errno::EBADMSG, 74, "EBADMSG"),
        (Errno::EOVERFLOW, 75, "EOVERFLOW"),
        (Errno::EILSEQ, 84, "EILSEQ"),
        (Errno::ERESTART, 85, "ERESTART"),
        (Errno::ENOTSOCK, 88, "ENOTSOCK"),
        (Errno::EMSGSIZE, 90, "EMSGSIZE"),
        (Errno::EOPNOTSUPP, 95, "EOPNOTSUPP"),
        (Errno::EADDRINUSE, 98, "EADDRINUSE"),
        (Errno::EADDRNOTAVAIL, 99, "EADDRNOTAVAIL"),
        (Errno::ENOBUFS, 105, "ENOBUFS"),
        (Errno::EISCONN, 106, "EISCONN"),
        (Errno::ENOTCONN, 107, "ENOTCONN"),
        (Errno::ETIMEDOUT, 110, "ETIMEDOUT"),
        (Errno::ECONNREFUSED, 111, "ECONNREFUSED"),
    ];

    #[test]
    fn values_match_xen_header() {
        assert_eq!(XEN_ERRNO_TABLE.len(), Errno::ALL.len());
        for (i, &(e, value, name)) in XEN_ERRNO_TABLE.iter().enumerate() {
            assert_eq!(Errno::ALL[i], e, "ALL is in header order");
            assert_eq!(e.as_raw(), value, "{name}");
            assert_eq!(e as i32, value, "{name}");
            assert_eq!(e.name(), name);
            assert_eq!(e.as_hypercall_ret(), -i64::from(value));
        }
    }

    #[test]
    fn aliases() {
        assert_eq!(Errno::EWOULDBLOCK, Errno::EAGAIN);
        assert_eq!(Errno::EWOULDBLOCK.as_raw(), 11);
        assert_eq!(Errno::EDEADLOCK, Errno::EDEADLK);
        assert_eq!(Errno::EDEADLOCK.as_raw(), 35);
    }

    #[test]
    fn hypercall_ret() {
        assert_eq!(Errno::EINVAL.as_hypercall_ret(), -22);
        assert_eq!(Errno::ENOSYS.as_hypercall_ret(), -38);
        assert_eq!(Errno::EACCES.as_hypercall_ret(), -13);
    }

    #[test]
    fn from_raw_round_trip_every_variant() {
        for &e in Errno::ALL {
            assert_eq!(Errno::from_raw(e.as_raw()), Some(e));
            assert_eq!(Errno::from_hypercall_ret(e.as_hypercall_ret()), Some(e));
        }
    }

    #[test]
    fn from_raw_rejects_unknown() {
        for raw in [
            0,
            -1,
            -22,
            15,
            25,
            26,
            27,
            29,
            32,
            40,
            60,
            86,
            112,
            i32::MAX,
            i32::MIN,
        ] {
            assert_eq!(Errno::from_raw(raw), None, "{raw}");
        }
        for ret in [0, 1, 22, i64::MIN, i64::from(i32::MIN), -15, -112] {
            assert_eq!(Errno::from_hypercall_ret(ret), None, "{ret}");
        }
    }

    #[test]
    fn display() {
        use std::string::ToString;
        assert_eq!(Errno::EINVAL.to_string(), "EINVAL (invalid argument)");
        assert_eq!(
            Errno::ENOSYS.to_string(),
            "ENOSYS (function not implemented)"
        );
        for &e in Errno::ALL {
            let s = e.to_string();
            assert!(s.starts_with(e.name()));
            assert!(!e.description().is_empty());
        }
    }
}
