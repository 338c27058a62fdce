"""Operations: health and readiness for a load balancer, Prometheus metrics, JSON logs."""
