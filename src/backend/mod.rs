//! Backends: where the same consumers will run on brokers.
//!
//! This layer is where the one backend trait, its in-process implementation over
//! [`Queue`](crate::Queue) and the broker adapters (RabbitMQ, Amazon SQS, each behind a cargo
//! feature with default features off) go. It may use the core and the patterns; neither may
//! use it.
