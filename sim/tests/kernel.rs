//! The kernel model of the simulated link: send buffer charged in skb truesize, TIOCOUTQ-like queue depth,
//! `drain_to` by the BlueZ backend's rule, and CPU time per write.

mod common;

use std::time::Duration;

use bytes::Bytes;
use colink_ble::{LinkMode, LinkParams};
use colink_sim::{Environment, KernelProfile, PhyProfile, Position, SimAir};
use common::link_pair;
use tokio::time::Instant;

fn rig_air() -> SimAir {
    let mut env = Environment::default();
    env.kernel = Some(KernelProfile::vm_rig());
    env.rx_buffer = 4 * 1024 * 1024;
    SimAir::builder(5).environment(env).profile(PhyProfile::btvirt_le()).build()
}

#[tokio::test(start_paused = true)]
async fn queued_bytes_are_the_kernel_charge_until_the_sdu_is_through() {
    let air = rig_air();
    let a = air.adapter("a", Position::new(0.0, 0.0));
    let b = air.adapter("b", Position::new(1.0, 0.0));
    let (la, lb, _l, _adv) = link_pair(&a, &b, LinkMode::Packet, LinkParams::default()).await;
    let kernel = KernelProfile::vm_rig();
    let sdu = Bytes::from(vec![7u8; 4096]);
    la.send(sdu.clone()).await.unwrap();
    // The SDU is on its way (the kernel works on it) and still charged, in truesize, not payload bytes.
    assert_eq!(la.queued_bytes(), Some(kernel.charge(4096)));
    assert!(kernel.charge(4096) > 4096 * 10);
    la.send(sdu.clone()).await.unwrap();
    assert_eq!(la.queued_bytes(), Some(2 * kernel.charge(4096)));
    // drain_to(0) waits until only the latest SDU is charged: the first one is through.
    let start = Instant::now();
    la.drain_to(0).await.unwrap();
    assert_eq!(la.queued_bytes(), Some(kernel.charge(4096)));
    let took = start.elapsed();
    let cpu = kernel.cpu_time(4096);
    assert!(took + Duration::from_millis(1) >= cpu && took <= cpu + Duration::from_millis(2), "{took:?} vs {cpu:?}");
    assert_eq!(lb.recv().await.unwrap(), sdu);
}

#[tokio::test(start_paused = true)]
async fn goodput_follows_the_cost_per_write() {
    let air = rig_air();
    let a = air.adapter("a", Position::new(0.0, 0.0));
    let b = air.adapter("b", Position::new(1.0, 0.0));
    let (la, lb, _l, _adv) = link_pair(&a, &b, LinkMode::Packet, LinkParams::default()).await;
    let kernel = KernelProfile::vm_rig();
    let mut rate = Vec::new();
    for sdu_len in [4096usize, 65535] {
        let total = 64 * sdu_len;
        let sdu = Bytes::from(vec![1u8; sdu_len]);
        let start = Instant::now();
        let send = async {
            for _ in 0..64 {
                la.send(sdu.clone()).await.unwrap();
            }
        };
        let recv = async {
            let mut got = 0;
            while got < total {
                got += lb.recv().await.unwrap().len();
            }
        };
        tokio::join!(send, recv);
        let kib_s = total as f64 / 1024.0 / start.elapsed().as_secs_f64();
        let model = sdu_len as f64 / 1024.0 / kernel.cpu_time(sdu_len).as_secs_f64();
        assert!((kib_s / model - 1.0).abs() < 0.05, "{sdu_len}: {kib_s:.0} KiB/s vs {model:.0}");
        rate.push(kib_s);
    }
    // Fewer, larger writes are faster on the rig's CPU-bound link.
    assert!(rate[1] > rate[0] * 1.05, "{rate:?}");
}
