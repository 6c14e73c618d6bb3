//! Network interfaces, with ioctls on a datagram socket (no userspace tools needed): bringing up
//! `lo` (the kernel assigns `127.0.0.1/8` and `::1` when it goes up), and the static configuration
//! of the sandbox's ethernet interface that the host passes on the kernel command line.

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use std::os::fd::AsRawFd;

/// Sets `IFF_UP` on `lo`.
pub fn loopback_up() -> std::io::Result<()> {
    let sock = inet_socket()?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: both ioctls read and write one `ifreq`, which lives for the duration of the calls;
    // the flags member of the union is the one these requests use.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Configures the first ethernet interface from the host's parameters: address, up, default
/// route; and writes `/etc/resolv.conf`.
pub fn configure(params: &super::cmdline::NetParams) -> std::io::Result<String> {
    let name = first_ethernet()?;
    let sock = inet_socket()?;
    apply(sock.as_raw_fd(), &name, params)?;
    Ok(name)
}

/// Moves the first ethernet interface to another MAC and address (a restored copy of another
/// sandbox's memory takes on its own identity), then applies `params` as at boot. The old
/// default route goes with the old address; adding it again is allowed to find it present.
pub fn reconfigure(mac: [u8; 6], params: &super::cmdline::NetParams) -> std::io::Result<String> {
    let name = first_ethernet()?;
    let sock = inet_socket()?;
    let fd = sock.as_raw_fd();
    let mut req = ifreq_for(&name);
    // SAFETY: `sockaddr` is plain old data; the kernel reads the family and the first six bytes.
    let mut hw: libc::sockaddr = unsafe { std::mem::zeroed() };
    hw.sa_family = libc::ARPHRD_ETHER;
    for (dst, src) in hw.sa_data.iter_mut().zip(mac) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_hwaddr = hw;
    // SAFETY: SIOCSIFHWADDR reads one `ifreq` that lives for the call (virtio-net allows a live
    // address change).
    if unsafe { libc::ioctl(fd, libc::SIOCSIFHWADDR, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    apply(fd, &name, params)?;
    Ok(name)
}

/// Address, netmask, up, default route and resolvers of interface `name`.
fn apply(fd: i32, name: &str, params: &super::cmdline::NetParams) -> std::io::Result<()> {
    let name = name.to_string();
    let mask = if params.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - params.prefix)
    };
    set_addr(fd, &name, libc::SIOCSIFADDR, params.addr)?;
    set_addr(
        fd,
        &name,
        libc::SIOCSIFNETMASK,
        std::net::Ipv4Addr::from(mask),
    )?;
    set_up(fd, &name)?;
    if let Some(gw) = params.gateway {
        match add_default_route(fd, gw) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => other?,
        }
    }
    if !params.dns.is_empty() {
        let conf: String = params
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        std::fs::write("/etc/resolv.conf", conf)?;
    }
    Ok(())
}

/// A datagram socket for the interface ioctls.
fn inet_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    Ok(socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// The first interface in `/sys/class/net` that is not loopback (virtio-net is `eth0`).
fn first_ethernet() -> std::io::Result<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no network interface"))
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req
}

fn sockaddr_in(addr: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sockaddr_in` and `sockaddr` have the same size; the kernel reads it as the family
    // says.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn set_addr(
    fd: i32,
    name: &str,
    request: libc::c_ulong,
    addr: std::net::Ipv4Addr,
) -> std::io::Result<()> {
    let mut req = ifreq_for(name);
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    // SAFETY: the request reads one `ifreq` that lives for the call.
    if unsafe { libc::ioctl(fd, request, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_up(fd: i32, name: &str) -> std::io::Result<()> {
    let mut req = ifreq_for(name);
    // SAFETY: as in `loopback_up`.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn add_default_route(fd: i32, gateway: std::net::Ipv4Addr) -> std::io::Result<()> {
    // SAFETY: `rtentry` is plain old data; all-zero is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(std::net::Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr_in(std::net::Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr_in(gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: SIOCADDRT reads one `rtentry` that lives for the call.
    if unsafe { libc::ioctl(fd, libc::SIOCADDRT, &rt) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
