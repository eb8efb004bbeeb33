/**
 * @module test/helpers/ports — a loopback TCP port free now, for a child process that must
 * listen on a port known in advance (a config file written before it starts, a restart on the
 * same port). The port is released before it is returned: another process could take it
 * first, which on a test host is rare and fails loudly (the child cannot listen).
 */
export function freeLoopbackPort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}
