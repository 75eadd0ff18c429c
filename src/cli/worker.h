/* cli/worker.h — `sdw worker`: a worker of a Redis pool (src/cli/worker.c). */
#ifndef SDW_CLI_WORKER_H
#define SDW_CLI_WORKER_H

/* Runs the worker with argv[0] = "worker" and its options after it; returns the exit code (exits
 * on bad usage and on failures before it runs). */
int sdw_cli_worker(int argc, char **argv);

#endif
