# Where each Iris region runs: an AWS region (several Iris regions may share
# one), three of its zones, and a VPC CIDR of its own (the global layer's is
# 10.250.0.0/16). Check the zone names against your account's before use.
aws_regions = {
  fra = { aws_region = "eu-central-1", zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"], cidr = "10.1.0.0/16" }
  ams = { aws_region = "eu-west-1", zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"], cidr = "10.2.0.0/16" }
  lhr = { aws_region = "eu-west-2", zones = ["eu-west-2a", "eu-west-2b", "eu-west-2c"], cidr = "10.3.0.0/16" }
  dub = { aws_region = "eu-west-1", zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"], cidr = "10.4.0.0/16" }
  cdg = { aws_region = "eu-west-3", zones = ["eu-west-3a", "eu-west-3b", "eu-west-3c"], cidr = "10.5.0.0/16" }
  mad = { aws_region = "eu-south-2", zones = ["eu-south-2a", "eu-south-2b", "eu-south-2c"], cidr = "10.6.0.0/16" }
  mxp = { aws_region = "eu-south-1", zones = ["eu-south-1a", "eu-south-1b", "eu-south-1c"], cidr = "10.7.0.0/16" }
  arn = { aws_region = "eu-north-1", zones = ["eu-north-1a", "eu-north-1b", "eu-north-1c"], cidr = "10.8.0.0/16" }
  waw = { aws_region = "eu-central-1", zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"], cidr = "10.9.0.0/16" }
  vie = { aws_region = "eu-central-1", zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"], cidr = "10.10.0.0/16" }
  zrh = { aws_region = "eu-central-2", zones = ["eu-central-2a", "eu-central-2b", "eu-central-2c"], cidr = "10.11.0.0/16" }
  ist = { aws_region = "eu-central-1", zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"], cidr = "10.12.0.0/16" }
  tlv = { aws_region = "il-central-1", zones = ["il-central-1a", "il-central-1b", "il-central-1c"], cidr = "10.13.0.0/16" }
  dxb = { aws_region = "me-central-1", zones = ["me-central-1a", "me-central-1b", "me-central-1c"], cidr = "10.14.0.0/16" }
  bom = { aws_region = "ap-south-1", zones = ["ap-south-1a", "ap-south-1b", "ap-south-1c"], cidr = "10.15.0.0/16" }
  del = { aws_region = "ap-south-1", zones = ["ap-south-1a", "ap-south-1b", "ap-south-1c"], cidr = "10.16.0.0/16" }
  maa = { aws_region = "ap-south-1", zones = ["ap-south-1a", "ap-south-1b", "ap-south-1c"], cidr = "10.17.0.0/16" }
  blr = { aws_region = "ap-south-2", zones = ["ap-south-2a", "ap-south-2b", "ap-south-2c"], cidr = "10.18.0.0/16" }
  cgk = { aws_region = "ap-southeast-3", zones = ["ap-southeast-3a", "ap-southeast-3b", "ap-southeast-3c"], cidr = "10.19.0.0/16" }
  sin = { aws_region = "ap-southeast-1", zones = ["ap-southeast-1a", "ap-southeast-1b", "ap-southeast-1c"], cidr = "10.20.0.0/16" }
  kul = { aws_region = "ap-southeast-1", zones = ["ap-southeast-1a", "ap-southeast-1b", "ap-southeast-1c"], cidr = "10.21.0.0/16" }
  bkk = { aws_region = "ap-southeast-1", zones = ["ap-southeast-1a", "ap-southeast-1b", "ap-southeast-1c"], cidr = "10.22.0.0/16" }
  hkg = { aws_region = "ap-east-1", zones = ["ap-east-1a", "ap-east-1b", "ap-east-1c"], cidr = "10.23.0.0/16" }
  tpe = { aws_region = "ap-east-1", zones = ["ap-east-1a", "ap-east-1b", "ap-east-1c"], cidr = "10.24.0.0/16" }
  icn = { aws_region = "ap-northeast-2", zones = ["ap-northeast-2a", "ap-northeast-2b", "ap-northeast-2c"], cidr = "10.25.0.0/16" }
  nrt = { aws_region = "ap-northeast-1", zones = ["ap-northeast-1a", "ap-northeast-1b", "ap-northeast-1c"], cidr = "10.26.0.0/16" }
  kix = { aws_region = "ap-northeast-3", zones = ["ap-northeast-3a", "ap-northeast-3b", "ap-northeast-3c"], cidr = "10.27.0.0/16" }
  syd = { aws_region = "ap-southeast-2", zones = ["ap-southeast-2a", "ap-southeast-2b", "ap-southeast-2c"], cidr = "10.28.0.0/16" }
  mel = { aws_region = "ap-southeast-4", zones = ["ap-southeast-4a", "ap-southeast-4b", "ap-southeast-4c"], cidr = "10.29.0.0/16" }
  akl = { aws_region = "ap-southeast-2", zones = ["ap-southeast-2a", "ap-southeast-2b", "ap-southeast-2c"], cidr = "10.30.0.0/16" }
  gru = { aws_region = "sa-east-1", zones = ["sa-east-1a", "sa-east-1b", "sa-east-1c"], cidr = "10.31.0.0/16" }
  gig = { aws_region = "sa-east-1", zones = ["sa-east-1a", "sa-east-1b", "sa-east-1c"], cidr = "10.32.0.0/16" }
  scl = { aws_region = "sa-east-1", zones = ["sa-east-1a", "sa-east-1b", "sa-east-1c"], cidr = "10.33.0.0/16" }
  bog = { aws_region = "us-east-1", zones = ["us-east-1a", "us-east-1b", "us-east-1c"], cidr = "10.34.0.0/16" }
  lim = { aws_region = "sa-east-1", zones = ["sa-east-1a", "sa-east-1b", "sa-east-1c"], cidr = "10.35.0.0/16" }
  mex = { aws_region = "mx-central-1", zones = ["mx-central-1a", "mx-central-1b", "mx-central-1c"], cidr = "10.36.0.0/16" }
  qro = { aws_region = "mx-central-1", zones = ["mx-central-1a", "mx-central-1b", "mx-central-1c"], cidr = "10.37.0.0/16" }
  iad = { aws_region = "us-east-1", zones = ["us-east-1a", "us-east-1b", "us-east-1c"], cidr = "10.38.0.0/16" }
  ord = { aws_region = "us-east-2", zones = ["us-east-2a", "us-east-2b", "us-east-2c"], cidr = "10.39.0.0/16" }
  dfw = { aws_region = "us-east-2", zones = ["us-east-2a", "us-east-2b", "us-east-2c"], cidr = "10.40.0.0/16" }
  atl = { aws_region = "us-east-1", zones = ["us-east-1a", "us-east-1b", "us-east-1c"], cidr = "10.41.0.0/16" }
  mia = { aws_region = "us-east-1", zones = ["us-east-1a", "us-east-1b", "us-east-1c"], cidr = "10.42.0.0/16" }
  sea = { aws_region = "us-west-2", zones = ["us-west-2a", "us-west-2b", "us-west-2c"], cidr = "10.43.0.0/16" }
  sfo = { aws_region = "us-west-2", zones = ["us-west-2a", "us-west-2b", "us-west-2c"], cidr = "10.44.0.0/16" }
  lax = { aws_region = "us-west-2", zones = ["us-west-2a", "us-west-2b", "us-west-2c"], cidr = "10.45.0.0/16" }
  yyz = { aws_region = "ca-central-1", zones = ["ca-central-1a", "ca-central-1b", "ca-central-1d"], cidr = "10.46.0.0/16" }
  yul = { aws_region = "ca-central-1", zones = ["ca-central-1a", "ca-central-1b", "ca-central-1d"], cidr = "10.47.0.0/16" }
  jnb = { aws_region = "af-south-1", zones = ["af-south-1a", "af-south-1b", "af-south-1c"], cidr = "10.48.0.0/16" }
  cpt = { aws_region = "af-south-1", zones = ["af-south-1a", "af-south-1b", "af-south-1c"], cidr = "10.49.0.0/16" }
  los = { aws_region = "af-south-1", zones = ["af-south-1a", "af-south-1b", "af-south-1c"], cidr = "10.50.0.0/16" }
}
