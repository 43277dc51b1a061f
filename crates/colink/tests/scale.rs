//! Scale: 64 simulated devices and 1,000 concurrent sessions in one process, all connected at once, every one
//! carrying a message each way.

#[path = "common/scale.rs"]
mod scale;

#[tokio::test(start_paused = true)]
async fn sixty_four_devices_and_a_thousand_sessions() {
    let report = scale::run(32, 32, |_| {}).await;
    assert_eq!(report.devices, 64);
    assert!(report.sessions >= 1000, "{report:?}");
    // Connecting 32 sessions per link at once stays within the reference's 10 s connect timeout.
    assert!(report.setup < std::time::Duration::from_secs(10), "{report:?}");
}
