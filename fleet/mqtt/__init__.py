"""The MQTT transport: a device behind NAT reachable through its one outbound broker connection.

Modules, one job each: `topics` (the topic layout), `chunks` (content-defined chunking and the
chunk store), `client` (the paho wrapper), `service` (the device side, `edgeship agent serve`),
`transport` (the manager side, registered as the "mqtt" transport), `credentials` (password file
and ACL for mosquitto), `certs` (a CA and a server certificate for `mqtts://`).
"""
