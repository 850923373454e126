//! Types shared by the kernel programs (`sessionwatch-ebpf`) and the agent.
#![no_std]
