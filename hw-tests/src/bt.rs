//! BlueZ helpers shared by the tests: advertising, discovery with post-filtering, the pairing agent, socket
//! readiness. Each kernel/BlueZ quirk handled here is named in a comment (details: docs/vm-rig.md).

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bluer::adv::{Advertisement, AdvertisementHandle, Type};
use bluer::agent::{Agent, AgentHandle};
use bluer::{Adapter, AdapterEvent, Address, AddressType, DiscoveryFilter, DiscoveryTransport, Session};
use futures::StreamExt;

use crate::advert::{Advert, TEST_UUID};
use crate::harness::{OrFail, Stop};

/// Registers the suite's advert on `adapter`; dropping the handle unregisters it.
///
/// Quirk (vm-rig.md, advertising): an LE peripheral is only connectable while it advertises, and a
/// `btmgmt advertising on` set by hand hides a D-Bus advert; the rig leaves mgmt advertising off and every
/// responder advertises itself, as it must on real laptops.
pub(crate) async fn advertise(adapter: &Adapter, advert: &Advert) -> Result<AdvertisementHandle, Stop> {
    let adv = Advertisement {
        advertisement_type: Type::Peripheral,
        service_data: [(TEST_UUID, advert.encode())].into_iter().collect(),
        discoverable: Some(true),
        min_interval: Some(Duration::from_millis(20)),
        max_interval: Some(Duration::from_millis(40)),
        ..Default::default()
    };
    adapter.advertise(adv).await.or_fail(&format!("advertise on {}", adapter.name()))
}

/// A matching advert seen by discovery.
#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) advert: Advert,
    pub(crate) address: Address,
    pub(crate) address_type: AddressType,
    /// `None` when the controller does not know it (BlueZ reports 127).
    pub(crate) rssi: Option<i16>,
    /// How long after starting discovery it was seen.
    pub(crate) after: Duration,
    /// Other devices seen that did not carry a matching advert (post-filtered out).
    pub(crate) filtered_out: usize,
}

/// Forgets `peer` on `adapter` (stale service data, bonds, connections); missing is fine.
pub(crate) async fn forget(adapter: &Adapter, peer: Address) {
    let _ = adapter.remove_device(peer).await;
}

/// Discovers over LE until `peer` shows our advert for `test`, post-filtering everything else.
///
/// Quirk (bluez.md): BlueZ merges the discovery filters of all D-Bus clients and its UUID filter can drop
/// service-data adverts, so no UUID filter is set and adverts are filtered here.
pub(crate) async fn discover(adapter: &Adapter, peer: Address, test: u8, timeout: Duration) -> Result<Seen, Stop> {
    let filter = DiscoveryFilter { transport: DiscoveryTransport::Le, duplicate_data: true, ..Default::default() };
    adapter.set_discovery_filter(filter).await.or_fail("set discovery filter")?;
    let start = Instant::now();
    let events = adapter.discover_devices_with_changes().await.or_fail("start discovery")?;
    futures::pin_mut!(events);
    let mut others = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let candidates: Vec<Address> = tokio::select! {
            ev = events.next() => match ev {
                Some(AdapterEvent::DeviceAdded(addr)) => vec![addr],
                Some(_) => continue,
                None => return Err(Stop::Fail(format!("discovery on {} ended early", adapter.name()))),
            },
            // Property-change events can race the device's creation: look at the known devices now and then.
            _ = tick.tick() => adapter.device_addresses().await.unwrap_or_default(),
            () = &mut deadline => {
                return Err(Stop::Fail(format!(
                    "{} did not see the advert of test {test} from {peer} within {timeout:?} ({} other devices seen)",
                    adapter.name(), others.len()
                )));
            }
        };
        for addr in candidates {
            let Ok(dev) = adapter.device(addr) else { continue };
            let advert = dev
                .service_data()
                .await
                .ok()
                .flatten()
                .and_then(|sd| sd.get(&TEST_UUID).and_then(|d| Advert::decode(d)));
            match advert {
                Some(advert) if addr == peer && advert.test == test => {
                    let address_type = dev.address_type().await.or_fail("device address type")?;
                    // Quirk (vm-rig.md): RSSI 127 means "not available" (always so on btvirt controllers).
                    let rssi = dev.rssi().await.ok().flatten().filter(|&r| r != 127);
                    others.remove(&addr);
                    return Ok(Seen {
                        advert,
                        address: addr,
                        address_type,
                        rssi,
                        after: start.elapsed(),
                        filtered_out: others.len(),
                    });
                }
                _ => {
                    others.insert(addr);
                }
            }
        }
    }
}

/// Records what the pairing agent was asked.
#[derive(Debug, Default)]
pub(crate) struct AgentLog(Mutex<Vec<String>>);

impl AgentLog {
    fn push(&self, s: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(s);
        }
    }
    pub(crate) fn entries(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Registers a DisplayYesNo agent that accepts numeric comparison and authorization.
///
/// Quirk (vm-rig.md, pairing): an agent without callbacks (NoInputNoOutput) fails LE pairing on kernel 6.1:
/// bluetoothd turns the Just Works confirmation into RequestAuthorization, which bluer rejects without a
/// callback. Both `request_confirmation` and `request_authorization` are set, answering Ok. One agent serves
/// every adapter of the process; registering it also makes the adapters bondable.
pub(crate) async fn register_agent(session: &Session, log: Arc<AgentLog>) -> Result<AgentHandle, Stop> {
    let (l1, l2, l3) = (log.clone(), log.clone(), log);
    let agent = Agent {
        request_default: true,
        request_confirmation: Some(Box::new(move |req| {
            l1.push(format!("{} asked to confirm passkey {:06} with {}", req.adapter, req.passkey, req.device));
            Box::pin(async { Ok(()) })
        })),
        request_authorization: Some(Box::new(move |req| {
            l2.push(format!("{} asked to authorize pairing with {}", req.adapter, req.device));
            Box::pin(async { Ok(()) })
        })),
        authorize_service: Some(Box::new(move |req| {
            l3.push(format!("{} asked to authorize service {} for {}", req.adapter, req.service, req.device));
            Box::pin(async { Ok(()) })
        })),
        ..Default::default()
    };
    session.register_agent(agent).await.or_fail("register pairing agent")
}

/// Waits until a just-connected socket is really connected.
///
/// Quirk (bluer issue #163, vm-rig.md): bluer's `connect()` returns before the L2CAP/RFCOMM link is up (its
/// async fd reports the writability the socket had before connecting), and a send then fails with ENOTCONN.
/// poll(2) for POLLOUT reports the socket's current state; on POLLERR/POLLHUP, SO_ERROR says why.
pub(crate) async fn wait_connected(sock: &impl AsRawFd, timeout: Duration) -> io::Result<Duration> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    // SAFETY: `sock` owns the descriptor and outlives this borrow, which does not escape the function.
    let fd = unsafe { BorrowedFd::borrow_raw(sock.as_raw_fd()) };
    let start = Instant::now();
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
        poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 0 }))?;
        let revents = fds[0].revents();
        if revents.intersects(PollFlags::ERR | PollFlags::HUP) || revents.contains(PollFlags::OUT) {
            if let Err(e) = rustix::net::sockopt::socket_error(fd)? {
                return Err(e.into());
            }
            if revents.contains(PollFlags::OUT) {
                return Ok(start.elapsed());
            }
            return Err(io::Error::new(io::ErrorKind::NotConnected, "socket hung up while connecting"));
        }
        if start.elapsed() > timeout {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("not connected after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The socket's SO_SNDBUF.
pub(crate) fn send_buffer(sock: &impl AsRawFd) -> io::Result<usize> {
    // SAFETY: as in `wait_connected`.
    let fd = unsafe { BorrowedFd::borrow_raw(sock.as_raw_fd()) };
    Ok(rustix::net::sockopt::socket_send_buffer_size(fd)?)
}
