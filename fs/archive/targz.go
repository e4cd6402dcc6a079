package archive

type gzDict struct{}

func (a *Archive) openTarGzMember(snap Entry) (memberReader, error) { return nil, ErrUnsupported }
