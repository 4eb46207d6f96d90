# Inputs that make no region: each is refused with a message naming it.

variables {
  users                = 1000
  peak_msgs_per_second = 10
  regions              = { eu = { home_share = 1 } }
}

run "shares_do_not_add_up" {
  command = plan
  variables {
    regions = { eu = { home_share = 0.5 }, us = { home_share = 0.4 } }
  }
  expect_failures = [var.regions]
}

run "bad_region_name" {
  command = plan
  variables {
    regions = { "eu west" = { home_share = 1 } }
  }
  expect_failures = [var.regions]
}

run "duplicate_zones" {
  command = plan
  variables {
    regions = { eu = { home_share = 1, zones = ["a", "a"] } }
  }
  expect_failures = [var.regions]
}

run "no_users" {
  command = plan
  variables {
    users = 0
  }
  expect_failures = [var.users]
}

run "fractional_users" {
  command = plan
  variables {
    users = 10.5
  }
  expect_failures = [var.users]
}

run "quic_share_above_one" {
  command = plan
  variables {
    quic_share = 1.5
  }
  expect_failures = [var.quic_share]
}

run "too_many_sessions_per_user" {
  command = plan
  variables {
    sessions_per_user = 17
  }
  expect_failures = [var.sessions_per_user]
}

run "zero_peak" {
  command = plan
  variables {
    peak_msgs_per_second = 0
  }
  expect_failures = [var.peak_msgs_per_second]
}

run "retention_below_dedup_window" {
  command = plan
  variables {
    retention_days = 3
  }
  expect_failures = [var.retention_days]
}

run "unknown_backend" {
  command = plan
  variables {
    storage_backend = "postgres"
  }
  expect_failures = [var.storage_backend]
}

run "no_token_keys" {
  command = plan
  variables {
    auth = { issuer = "https://auth.example.com" }
  }
  expect_failures = [var.auth]
}

run "edges_without_memory_for_sessions" {
  command = plan
  variables {
    instances = { edge = { type = "t3.small", vcpu = 2, memory_gib = 2, reserved_gib = 4 } }
  }
  expect_failures = [var.instances]
}

run "clashing_ports" {
  command = plan
  variables {
    ports = { ws = 9100 }
  }
  expect_failures = [var.ports]
}

run "bad_redis_url" {
  command = plan
  variables {
    regions = { eu = { home_share = 1, redis_url = "http://redis:6379" } }
  }
  expect_failures = [var.regions]
}

run "capacity_file_missing_a_figure" {
  command = plan
  variables {
    capacity_file = "tests/fixtures/capacity-missing-quic.json"
  }
  expect_failures = [output.regions]
}

# A region too big for 4,096 shards must be split.
run "region_beyond_the_shard_limit" {
  command = plan
  variables {
    users                = 1000000000
    peak_msgs_per_second = 3000000
    regions              = { one = { home_share = 1, zones = ["a"] } }
  }
  expect_failures = [output.regions]
}

run "capacity_file_missing_the_core_figure" {
  command = plan
  variables {
    capacity_file = "tests/fixtures/capacity-missing-core.json"
  }
  expect_failures = [output.regions]
}

run "tracing_over_https" {
  command = plan
  variables {
    tracing = { otlp_endpoint = "https://collector:4318" }
  }
  expect_failures = [var.tracing]
}

run "tracing_ratio_above_one" {
  command = plan
  variables {
    tracing = { otlp_endpoint = "http://collector:4318", sample_ratio = 2 }
  }
  expect_failures = [var.tracing]
}
