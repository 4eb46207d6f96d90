# 1 billion users in 50 regions of equal share: the design's planet table
# (about 7,000 nodes: 5,000 edges, 1,000 cores, 300 brokers, 450 ScyllaDB,
# 300 Redis).

variables {
  users                = 1000000000
  peak_msgs_per_second = 6960000
  # Written out: OpenTofu 1.8 allows no function calls here.
  regions = {
    r00 = { home_share = 0.02 }
    r01 = { home_share = 0.02 }
    r02 = { home_share = 0.02 }
    r03 = { home_share = 0.02 }
    r04 = { home_share = 0.02 }
    r05 = { home_share = 0.02 }
    r06 = { home_share = 0.02 }
    r07 = { home_share = 0.02 }
    r08 = { home_share = 0.02 }
    r09 = { home_share = 0.02 }
    r10 = { home_share = 0.02 }
    r11 = { home_share = 0.02 }
    r12 = { home_share = 0.02 }
    r13 = { home_share = 0.02 }
    r14 = { home_share = 0.02 }
    r15 = { home_share = 0.02 }
    r16 = { home_share = 0.02 }
    r17 = { home_share = 0.02 }
    r18 = { home_share = 0.02 }
    r19 = { home_share = 0.02 }
    r20 = { home_share = 0.02 }
    r21 = { home_share = 0.02 }
    r22 = { home_share = 0.02 }
    r23 = { home_share = 0.02 }
    r24 = { home_share = 0.02 }
    r25 = { home_share = 0.02 }
    r26 = { home_share = 0.02 }
    r27 = { home_share = 0.02 }
    r28 = { home_share = 0.02 }
    r29 = { home_share = 0.02 }
    r30 = { home_share = 0.02 }
    r31 = { home_share = 0.02 }
    r32 = { home_share = 0.02 }
    r33 = { home_share = 0.02 }
    r34 = { home_share = 0.02 }
    r35 = { home_share = 0.02 }
    r36 = { home_share = 0.02 }
    r37 = { home_share = 0.02 }
    r38 = { home_share = 0.02 }
    r39 = { home_share = 0.02 }
    r40 = { home_share = 0.02 }
    r41 = { home_share = 0.02 }
    r42 = { home_share = 0.02 }
    r43 = { home_share = 0.02 }
    r44 = { home_share = 0.02 }
    r45 = { home_share = 0.02 }
    r46 = { home_share = 0.02 }
    r47 = { home_share = 0.02 }
    r48 = { home_share = 0.02 }
    r49 = { home_share = 0.02 }
  }
}

run "planet_1b" {
  command = plan

  assert {
    condition     = length(output.regions) == 50 && output.global.federated
    error_message = "50 regions, federated."
  }
  assert {
    condition     = output.totals.nodes < 7000
    error_message = "The planet needs ${output.totals.nodes} nodes, no fewer than the design's 7,000."
  }
  assert {
    condition     = alltrue([for _, r in output.regions : r.relays >= 2])
    error_message = "Every region of a federation runs at least two relays."
  }
  assert {
    condition     = output.totals.edges + output.totals.cores + output.totals.relays == length(output.node_configs)
    error_message = "One config per Iris node."
  }
  assert {
    condition     = length(distinct([for _, r in output.regions : r.shards])) == 1 && length(distinct([for _, r in output.regions : r.edges])) == 1
    error_message = "Equal regions are sized equally."
  }
  assert {
    condition = alltrue([for k, c in output.node_configs : strcontains(c, "global_partitions = ${output.global.partitions}\n")
    && strcontains(c, "regions = [\"r00\",\"r01\",")])
    error_message = "Every config names every region and the same global partition count."
  }
  assert {
    condition     = length([for k, c in output.node_configs : k if strcontains(c, "relay = true")]) == output.totals.relays
    error_message = "Exactly the relay nodes run relays."
  }
  assert {
    condition     = output.global.brokers >= 3 && output.global.brokers % 3 == 0 && length(output.global.topics) == 50
    error_message = "The global layer has brokers in threes and one topic per region."
  }
}

run "planet_uneven_shares" {
  command = plan

  variables {
    regions = {
      big = { home_share = 0.265 }
      s00 = { home_share = 0.015 }
      s01 = { home_share = 0.015 }
      s02 = { home_share = 0.015 }
      s03 = { home_share = 0.015 }
      s04 = { home_share = 0.015 }
      s05 = { home_share = 0.015 }
      s06 = { home_share = 0.015 }
      s07 = { home_share = 0.015 }
      s08 = { home_share = 0.015 }
      s09 = { home_share = 0.015 }
      s10 = { home_share = 0.015 }
      s11 = { home_share = 0.015 }
      s12 = { home_share = 0.015 }
      s13 = { home_share = 0.015 }
      s14 = { home_share = 0.015 }
      s15 = { home_share = 0.015 }
      s16 = { home_share = 0.015 }
      s17 = { home_share = 0.015 }
      s18 = { home_share = 0.015 }
      s19 = { home_share = 0.015 }
      s20 = { home_share = 0.015 }
      s21 = { home_share = 0.015 }
      s22 = { home_share = 0.015 }
      s23 = { home_share = 0.015 }
      s24 = { home_share = 0.015 }
      s25 = { home_share = 0.015 }
      s26 = { home_share = 0.015 }
      s27 = { home_share = 0.015 }
      s28 = { home_share = 0.015 }
      s29 = { home_share = 0.015 }
      s30 = { home_share = 0.015 }
      s31 = { home_share = 0.015 }
      s32 = { home_share = 0.015 }
      s33 = { home_share = 0.015 }
      s34 = { home_share = 0.015 }
      s35 = { home_share = 0.015 }
      s36 = { home_share = 0.015 }
      s37 = { home_share = 0.015 }
      s38 = { home_share = 0.015 }
      s39 = { home_share = 0.015 }
      s40 = { home_share = 0.015 }
      s41 = { home_share = 0.015 }
      s42 = { home_share = 0.015 }
      s43 = { home_share = 0.015 }
      s44 = { home_share = 0.015 }
      s45 = { home_share = 0.015 }
      s46 = { home_share = 0.015 }
      s47 = { home_share = 0.015 }
      s48 = { home_share = 0.015 }
    }
  }

  assert {
    condition     = output.regions["big"].edges > output.regions["s00"].edges && output.regions["big"].shards >= output.regions["s00"].shards
    error_message = "A region with half the users needs more edges and no fewer shards than a 1.5 % region."
  }
  assert {
    condition     = output.regions["big"].outbound_partitions >= output.regions["s00"].outbound_partitions
    error_message = "The busiest region gets at least as many outbound partitions."
  }
}
