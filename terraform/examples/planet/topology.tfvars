# The design's planet: 1 billion users in 50 regions of 20 million, at the
# design's 2.3 msgs/s per 1,000 users on average (2.32 million msgs/s) and a
# peak three times that. Zones default to a, b, c (mapped to AZs per region
# by the aws-region module's availability_zones).
users                = 1000000000
peak_msgs_per_second = 6960000
regions = {
  fra = { home_share = 0.02 }
  ams = { home_share = 0.02 }
  lhr = { home_share = 0.02 }
  dub = { home_share = 0.02 }
  cdg = { home_share = 0.02 }
  mad = { home_share = 0.02 }
  mxp = { home_share = 0.02 }
  arn = { home_share = 0.02 }
  waw = { home_share = 0.02 }
  vie = { home_share = 0.02 }
  zrh = { home_share = 0.02 }
  ist = { home_share = 0.02 }
  tlv = { home_share = 0.02 }
  dxb = { home_share = 0.02 }
  bom = { home_share = 0.02 }
  del = { home_share = 0.02 }
  maa = { home_share = 0.02 }
  blr = { home_share = 0.02 }
  cgk = { home_share = 0.02 }
  sin = { home_share = 0.02 }
  kul = { home_share = 0.02 }
  bkk = { home_share = 0.02 }
  hkg = { home_share = 0.02 }
  tpe = { home_share = 0.02 }
  icn = { home_share = 0.02 }
  nrt = { home_share = 0.02 }
  kix = { home_share = 0.02 }
  syd = { home_share = 0.02 }
  mel = { home_share = 0.02 }
  akl = { home_share = 0.02 }
  gru = { home_share = 0.02 }
  gig = { home_share = 0.02 }
  scl = { home_share = 0.02 }
  bog = { home_share = 0.02 }
  lim = { home_share = 0.02 }
  mex = { home_share = 0.02 }
  qro = { home_share = 0.02 }
  iad = { home_share = 0.02 }
  ord = { home_share = 0.02 }
  dfw = { home_share = 0.02 }
  atl = { home_share = 0.02 }
  mia = { home_share = 0.02 }
  sea = { home_share = 0.02 }
  sfo = { home_share = 0.02 }
  lax = { home_share = 0.02 }
  yyz = { home_share = 0.02 }
  yul = { home_share = 0.02 }
  jnb = { home_share = 0.02 }
  cpt = { home_share = 0.02 }
  los = { home_share = 0.02 }
}
tls  = { cert_file = "/etc/iris/tls/cert.pem", key_file = "/etc/iris/tls/key.pem" }
auth = { jwks_file = "/etc/iris/jwks.json" }
