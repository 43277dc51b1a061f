//! Criterion benchmark: colink-frame's full frame path against the tokio-util + crc32fast baseline, per MTU.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

#[path = "common/pipelines.rs"]
mod pipelines;

fn codec(c: &mut Criterion) {
    let message = pipelines::message(4 << 20);
    let mut group = c.benchmark_group("frame_path_4MiB");
    group.throughput(Throughput::Bytes(message.len() as u64));
    group.sample_size(10);
    for mtu in [247usize, 672, 4096, 65535] {
        group.bench_with_input(BenchmarkId::new("colink_stream", mtu), &mtu, |b, &mtu| {
            b.iter(|| black_box(pipelines::colink_stream(&message, mtu)));
        });
        group.bench_with_input(BenchmarkId::new("colink_packet", mtu), &mtu, |b, &mtu| {
            b.iter(|| black_box(pipelines::colink_packet(&message, mtu)));
        });
        group.bench_with_input(BenchmarkId::new("baseline", mtu), &mtu, |b, &mtu| {
            b.iter(|| black_box(pipelines::baseline(&message, mtu)));
        });
    }
    group.finish();

    let mut crc = c.benchmark_group("crc32c_64KiB");
    let block = pipelines::message(64 << 10);
    crc.throughput(Throughput::Bytes(block.len() as u64));
    crc.bench_function("colink_frame::crc32c", |b| b.iter(|| colink_frame::crc32c(black_box(&block))));
    crc.bench_function("crc crate (software)", |b| b.iter(|| colink_frame::crc32c_software(black_box(&block))));
    crc.bench_function("crc32fast (CRC-32)", |b| b.iter(|| crc32fast::hash(black_box(&block))));
    crc.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
