//! The TCP echo traffic generator (`dockertrace workload server|client`).
