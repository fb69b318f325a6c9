//! Mounts the watch page. On the host this is an empty program, so the
//! workspace's native build and tests stay fast.
#![forbid(unsafe_code)]

#[cfg(target_arch = "wasm32")]
fn main() {
    leptos::mount::mount_to_body(stagecast_viewer::App);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {}
