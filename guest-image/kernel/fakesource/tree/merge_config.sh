#!/bin/sh
# Stand-in for the kernel's merge_config.sh -m -O DIR BASE FRAGMENT (guest-image/kernel tests).
set -e
out=$3 base=$4 frag=$5
tmp=$out/.config.merge
cp "$base" "$tmp"
for name in $(sed -n -e 's/^\(CONFIG_[A-Za-z0-9_]*\)=.*/\1/p' -e 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1/p' "$frag"); do
	grep -v -e "^$name=" -e "^# $name is not set\$" "$tmp" > "$tmp.2" || true
	mv "$tmp.2" "$tmp"
done
cat "$frag" >> "$tmp"
mv "$tmp" "$out/.config"
