package debimage

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Account is a user with its own group, as a maintainer script's adduser would create it.
type Account struct {
	Name     string
	UID, GID int
	Home     string
}

// Dir is a directory the application needs at run time (a maintainer script or systemd unit
// creates it on a Debian system).
type Dir struct {
	Path     string
	UID, GID int
	Mode     int64
}

// File is a file of the recipe (a container-suited configuration, a default page).
type File struct {
	Path     string
	UID, GID int
	Mode     int64
	Data     string
}

// Recipe describes one application image.
type Recipe struct {
	Name     string   // the recipe's name (--recipe)
	Packages []string // the Debian packages asked for (their closure is resolved)
	Exclude  []string // packages left out with what only they need, besides DefaultExclude
	Accounts []Account
	Dirs     []Dir
	Files    []File
	// The image config.
	Entrypoint, Cmd []string
	User            string // numeric uid:gid (Pod Security restricted needs runAsNonRoot)
	WorkingDir      string
	Env             []string
	Ports           []string // "6379/tcp"
}

// BasePackages are in every image: the C library every Debian binary links against (an
// Essential package, so packages do not list it in Depends).
var BasePackages = []string{"libc6"}

// DefaultExclude are packages only maintainer scripts and init systems use; the scripts do
// not run in an image built here (the recipe creates what they would).
var DefaultExclude = []string{
	"adduser", "cdebconf", "debconf", "dpkg", "init-system-helpers", "lsb-base", "passwd",
	"perl", "perl-base", "perl-modules-5.36", "sysvinit-utils", "tar", "ucf", "usrmerge",
	"libpam-modules", "libpam-modules-bin", "libpam0g", "libpam-runtime", "iproute2",
}

var accountRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// Validate checks the recipe: names, a numeric non-root user, absolute paths.
func (r *Recipe) Validate() error {
	if r.Name == "" || len(r.Packages) == 0 {
		return fmt.Errorf("recipe %q: a name and at least one package", r.Name)
	}
	for _, p := range append(append([]string{}, r.Packages...), r.Exclude...) {
		if !ValidName(p) {
			return fmt.Errorf("recipe %s: %q is not a Debian package name", r.Name, p)
		}
	}
	uid, gid, ok := strings.Cut(r.User, ":")
	u, err1 := strconv.Atoi(uid)
	g, err2 := strconv.Atoi(gid)
	if !ok || err1 != nil || err2 != nil || u <= 0 || g < 0 {
		return fmt.Errorf("recipe %s: user %q: want numeric non-root uid:gid", r.Name, r.User)
	}
	if len(r.Entrypoint) == 0 || !path.IsAbs(r.Entrypoint[0]) {
		return fmt.Errorf("recipe %s: entrypoint %q: want an absolute program path", r.Name, r.Entrypoint)
	}
	seen := map[string]bool{"root": true}
	for _, a := range r.Accounts {
		if !accountRE.MatchString(a.Name) || a.UID <= 0 || a.GID <= 0 || seen[a.Name] || !path.IsAbs(a.Home) || strings.ContainsAny(a.Home, ":\n") {
			return fmt.Errorf("recipe %s: account %+v: want a new name, uids > 0, an absolute home", r.Name, a)
		}
		seen[a.Name] = true
	}
	for _, d := range r.Dirs {
		if !path.IsAbs(d.Path) {
			return fmt.Errorf("recipe %s: dir %q: not absolute", r.Name, d.Path)
		}
	}
	for _, f := range r.Files {
		if !path.IsAbs(f.Path) {
			return fmt.Errorf("recipe %s: file %q: not absolute", r.Name, f.Path)
		}
	}
	return nil
}

// passwd and group render /etc/passwd and /etc/group: root, the recipe's accounts, nobody.
func (r *Recipe) passwd() (passwd, group string) {
	accts := append([]Account{}, r.Accounts...)
	sort.Slice(accts, func(i, j int) bool { return accts[i].UID < accts[j].UID })
	var pw, gr strings.Builder
	pw.WriteString("root:x:0:0:root:/root:/usr/sbin/nologin\n")
	gr.WriteString("root:x:0:\n")
	for _, a := range accts {
		fmt.Fprintf(&pw, "%s:x:%d:%d::%s:/usr/sbin/nologin\n", a.Name, a.UID, a.GID, a.Home)
		fmt.Fprintf(&gr, "%s:x:%d:\n", a.Name, a.GID)
	}
	pw.WriteString("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
	gr.WriteString("nogroup:x:65534:\n")
	return pw.String(), gr.String()
}

// Recipes are the applications the demo and e2e run (by --recipe name).
var Recipes = map[string]*Recipe{
	"redis": {
		Name:     "redis",
		Packages: []string{"redis-server"},
		// Debian's redis-server postinst: adduser --system --group redis, /var/lib/redis,
		// /var/log/redis, /run/redis (systemd's RuntimeDirectory).
		Accounts: []Account{{Name: "redis", UID: 999, GID: 999, Home: "/var/lib/redis"}},
		Dirs: []Dir{
			{Path: "/var/lib/redis", UID: 999, GID: 999, Mode: 0o750},
			{Path: "/var/log/redis", UID: 999, GID: 999, Mode: 0o750},
			{Path: "/run/redis", UID: 999, GID: 999, Mode: 0o755},
		},
		Files: []File{{Path: "/etc/redis/container.conf", Mode: 0o644, Data: redisConf}},
		// Arguments given to the container (Kubernetes args) follow the file, e.g.
		// --replicaof redis-leader 6379.
		Entrypoint: []string{"/usr/bin/redis-server", "/etc/redis/container.conf"},
		User:       "999:999",
		WorkingDir: "/var/lib/redis",
		Ports:      []string{"6379/tcp"},
	},
	"nginx": {
		Name:     "nginx",
		Packages: []string{"nginx"},
		// www-data is Debian's static 33:33 (base-passwd); nginx-common's postinst creates
		// /var/lib/nginx and /var/log/nginx, the init script /run/nginx.
		Accounts: []Account{{Name: "www-data", UID: 33, GID: 33, Home: "/var/www"}},
		Dirs: []Dir{
			{Path: "/var/lib/nginx", UID: 33, GID: 33, Mode: 0o750},
			{Path: "/var/log/nginx", UID: 33, GID: 33, Mode: 0o750},
			{Path: "/run/nginx", UID: 33, GID: 33, Mode: 0o755},
			{Path: "/var/www/html", Mode: 0o755},
		},
		Files: []File{
			{Path: "/etc/nginx/nginx.conf", Mode: 0o644, Data: nginxConf},
			{Path: "/var/www/html/index.html", Mode: 0o644, Data: "<!doctype html><title>nginx</title><p>nginx from Debian's package, built by debimage.\n"},
		},
		Entrypoint: []string{"/usr/sbin/nginx"},
		User:       "33:33",
		WorkingDir: "/",
		Ports:      []string{"8080/tcp"},
	},
}

// redisConf is Debian's redis.conf made for a container: in the foreground, logs to
// stdout, reachable from other pods (the image's network is the pod's), data in
// /var/lib/redis. No password, as the upstream images: the guestbook relies on it.
const redisConf = `# debimage recipe redis: the container's configuration (Debian's /etc/redis/redis.conf is
# for a systemd service: daemonized, loopback only, logs in /var/log/redis).
bind * -::*
protected-mode no
port 6379
daemonize no
supervised no
logfile ""
dir /var/lib/redis
`

// nginxConf runs nginx unprivileged on port 8080 in the foreground, errors to stderr.
const nginxConf = `# debimage recipe nginx: unprivileged (uid 33), in the foreground, port 8080.
worker_processes 1;
pid /run/nginx/nginx.pid;
error_log stderr;
daemon off;
events { worker_connections 256; }
http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	access_log /var/log/nginx/access.log;
	client_body_temp_path /var/lib/nginx/body;
	proxy_temp_path /var/lib/nginx/proxy;
	fastcgi_temp_path /var/lib/nginx/fastcgi;
	uwsgi_temp_path /var/lib/nginx/uwsgi;
	scgi_temp_path /var/lib/nginx/scgi;
	server {
		listen 8080;
		root /var/www/html;
		index index.html;
		location / { try_files $uri $uri/ =404; }
	}
}
`
