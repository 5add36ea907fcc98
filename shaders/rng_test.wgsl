// Test kernel: out[4i..4i+4] = philox((i, sample, block, stream), key) for i in 0..count.
// Host launcher: src/engine/gpu/kernel_tests.rs (the Philox test).

struct Params { count: u32, sample: u32, block: u32, stream: u32, key_lo: u32, key_hi: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.count) { return; }
    let w = philox(vec4<u32>(i, p.sample, p.block, p.stream), vec2<u32>(p.key_lo, p.key_hi));
    out[4u * i] = w.x;
    out[4u * i + 1u] = w.y;
    out[4u * i + 2u] = w.z;
    out[4u * i + 3u] = w.w;
}
