
#compdef cogvid

_cogvid_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _COGVID_COMPLETE=complete_zsh cogvid)
}

compdef _cogvid_completion cogvid

