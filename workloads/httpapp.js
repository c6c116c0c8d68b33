// Minimal HTTP app for the runtimes benchmark: "ok" to everything, exits on POST /quit.
const http = require('http');
const srv = http.createServer((req, res) => {
  res.end('ok\n');
  if (req.method === 'POST' && req.url === '/quit') srv.close(() => process.exit(0));
});
srv.listen(+process.argv[2], '127.0.0.1');
