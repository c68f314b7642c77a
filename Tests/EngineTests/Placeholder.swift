// placeholder until unit tests land
